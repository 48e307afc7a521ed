"""Thumbnails: the blocking renderer (``render``) that turns one stored file into thumbnails."""

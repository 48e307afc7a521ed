"""Previews (thumbnails) of images, PDFs, videos and office documents: the job table and its
runner (``jobs``), the worker processes (``pool``, ``worker``), the choice by content
(``sniff``, ``render``) and one renderer module per format family."""

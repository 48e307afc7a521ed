"""Typed application state keys (aiohttp ``web.AppKey``)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from blobstore.engine.base import Engine
from blobstore.keyring import KeyRing
from blobstore.store import ContentStore
from filesvc.accesslog import AccessLog
from filesvc.auth import VerifiedTokens
from filesvc.inflight import InFlight, UploadSlots
from filesvc.metrics import Metrics
from filesvc.scope import DedupScopes
from filesvc.service import FileService
from filesvc.settings import Settings
from filesvc.space import SpaceGuard
from filesvc.thumbnails.jobs import ThumbnailRunner
from filesvc.tus.store import TusStore

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Engine)
READY = web.AppKey("ready", asyncio.Event)
STORE = web.AppKey("store", ContentStore)
THUMBS = web.AppKey("thumbs", ThumbnailRunner)
SERVICE = web.AppKey("service", FileService)
METRICS = web.AppKey("metrics", Metrics)
INFLIGHT = web.AppKey("inflight", InFlight)
UPLOADS = web.AppKey("uploads", UploadSlots)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
SPACE = web.AppKey("space", SpaceGuard)
SCOPES = web.AppKey("scopes", DedupScopes)
TUS = web.AppKey("tus", TusStore)
TOKENS = web.AppKey("tokens", VerifiedTokens)
KEYS = web.AppKey("keys", KeyRing)
# Ends when the metadata database is connected, migrated and the master key checked; raises
# (KeyUnavailable) when the key is wrong, which stops `filesvc serve`.
CONNECTED = web.AppKey("connected", asyncio.Task[None])

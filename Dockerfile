# filesvc on the embedded default (local disk + SQLite): runtime dependencies only.
#   docker build -t filesvc .
#   docker run -p 8080:8080 -v filesvc-data:/data filesvc
#   docker exec <container> filesvc token --company acme --user alice
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FILESVC_HOST=0.0.0.0 \
    FILESVC_PORT=8080 \
    FILESVC_DATA_DIR=/data

# The wheels bring libvips, pdfium and libheif; nothing is needed from the distribution.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY filesvc ./filesvc
COPY blobstore ./blobstore
COPY bench ./bench
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin filesvc \
    && mkdir -p /data && chown filesvc:filesvc /data
USER filesvc
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# /healthz answers while the process serves; /readyz (for orchestrators) also checks the
# database, the blob store, the data directory and the thumbnail workers.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]

# SIGTERM drains requests in flight (FILESVC_DRAIN_TIMEOUT, 25 s) before the default 30 s of
# `docker stop` run out.
STOPSIGNAL SIGTERM
ENTRYPOINT ["filesvc"]
CMD ["serve"]

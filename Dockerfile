# One image for every Python service of the stack (workers, paper exchange, venue feeds).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY trading ./trading
COPY workflows ./workflows
COPY activities ./activities
COPY exchange ./exchange
COPY signals ./signals
COPY feeds ./feeds
COPY workers ./workers
COPY backtest ./backtest
COPY journal ./journal
COPY bench ./bench
COPY alerts ./alerts
# Point PIP_EXTRA_INDEX_URL at a CPU-only torch index to keep the image small (torch is pinned in pyproject).
ARG PIP_EXTRA_INDEX_URL=
RUN pip install --no-cache-dir . \
 && useradd --create-home --uid 10001 qtrader \
 && mkdir -p /data && chown qtrader /data
# The sample klines the repository ships (data/README.md): the installed package has no repository
# next to it, so without these the paper exchange had nothing to replay.
COPY data ./data
USER qtrader
ENV QT_HOME=/data QT_DATA_DIR=/app/data
ENTRYPOINT ["qtrader"]
CMD ["--help"]

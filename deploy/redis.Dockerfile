# Redis from Debian's redis-server package, for machines without a registry
# (the deployment test). Users keep the registry's redis:7 (compose's
# default); both take the same command line. Runs as the user redis; the
# data folder /data is a volume.
#   docker build -f deploy/redis.Dockerfile --build-arg BASE=$(deploy/base-image.sh) -t llmq-redis:12 deploy
ARG BASE=debian:12-slim
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]

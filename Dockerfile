# syntax=docker/dockerfile:1
#
# Butler as a container: `deno compile` turns main.ts into one binary with
# the permission flags baked in, and a minimal glibc image runs it as a
# non-root user. Build from the repository root:
#
#   docker build -t butler .
#
# The flags below are what `deno run -A main.ts permissions --config
# deploy/butler.docker.yaml` prints, with the config at its path in the
# image: listen 0.0.0.0:8080, upstream http://ollama:11434, the state
# directory /var/lib/butler and the variable BUTLER_KEY. A config that
# differs in any of those needs its own flags here (tests/deploy_test.ts
# checks that these match).

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock main.ts ./
COPY src/ ./src/
RUN deno compile \
      --allow-net=0.0.0.0:8080,ollama:11434 \
      --allow-read=/etc/butler/butler.yaml,/var/lib/butler \
      --allow-write=/var/lib/butler \
      --allow-env=BUTLER_KEY,LOG_STREAM,LOG_TOKENS \
      --no-prompt \
      --unstable-no-legacy-abort \
      --exclude-unused-npm \
      --output /out/butler main.ts \
 && mkdir -p /out/state

# glibc and libgcc, no shell, no package manager; user `nonroot` (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/butler /butler
COPY --from=build --chown=65532:65532 /out/state /var/lib/butler
COPY deploy/butler.docker.yaml /etc/butler/butler.yaml
USER 65532:65532
EXPOSE 8080
VOLUME ["/var/lib/butler"]
# No shell or curl in the image: Butler probes its own /healthz.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
  CMD ["/butler", "healthcheck", "--config", "/etc/butler/butler.yaml"]
# The config path is an argument, not baked into the binary, so that
# `docker run butler check --config …` and the healthcheck above work too.
ENTRYPOINT ["/butler"]
CMD ["--config", "/etc/butler/butler.yaml"]

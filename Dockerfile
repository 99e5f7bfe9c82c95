# The git-distribute worker image. On start it runs `distribute worker` configured entirely from
# the environment (DISTRIBUTE_REMOTE, DISTRIBUTE_RUN, ...; see docker/entrypoint.sh and the README
# section "Vast.ai nodes"). Build from the repository root:
#   docker build -t you/distribute-worker .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git for the remote, ssh for git@/ssh:// remotes, tini to reap git's children as PID 1.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git openssh-client tini \
    && rm -rf /var/lib/apt/lists/*

# Only what the package needs: no .git, no .env (it may hold keys), no local copies.
COPY setup.py README.md /src/
COPY distribute /src/distribute
COPY docker/entrypoint.sh /usr/local/bin/distribute-node
RUN pip install --no-cache-dir /src \
    && rm -rf /src \
    && chmod 0755 /usr/local/bin/distribute-node \
    && groupadd --gid 10001 worker \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash worker

USER 10001:10001
WORKDIR /home/worker
# DISTRIBUTE_EXTRA_PIP installs into ~/.local (pip --user).
ENV PATH=/home/worker/.local/bin:$PATH

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/distribute-node"]
CMD []

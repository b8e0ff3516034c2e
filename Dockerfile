# Switchboard's one process (the Procfile's `web`): Discord bot, web API and room page, and
# the embedded local SFU. Configure it with environment variables (README: "Deploy on a PaaS").
# A container is a public deployment: HTTP listens on 0.0.0.0:$PORT, so the service refuses
# to start without SWITCHBOARD_INVITE_SECRET.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY media ./media
RUN pip install .

# The SQLite store's default directory (var/ under the working directory) belongs to the
# unprivileged user the service runs as.
RUN useradd --system --no-create-home --uid 10001 switchboard \
    && mkdir var && chown switchboard:switchboard var
USER switchboard

ENV PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/live' % os.environ['PORT'], timeout=4)"
CMD ["python", "-m", "bot"]

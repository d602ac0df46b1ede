# omnirec: the flow and the API share one image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY omnirec ./omnirec
COPY online_models ./online_models
COPY flows ./flows
COPY api ./api
COPY bench ./bench
RUN pip install . \
    && useradd --create-home --uid 10001 omnirec \
    && mkdir -p /data/recovery && chown -R omnirec /data

USER omnirec
ENV OMNIREC_RECOVERY_DIR=/data/recovery
EXPOSE 8000
CMD ["omnirec", "api", "--host", "0.0.0.0", "--port", "8000"]

# Vertex AI custom-container training image: `python -m trainer.task`, with the job's args appended.
#   docker build -t IMAGE .                                   CPU
#   docker build --build-arg TF_EXTRAS='[and-cuda]' -t IMAGE .   NVIDIA GPU (tensorflow[and-cuda])
#   gcloud ai custom-jobs create ... --worker-pool-spec=...,container-image-uri=IMAGE --args=--dataset=ml-1m
FROM python:3.11-slim

# The `tensorflow` distribution (never tensorflow-cpu next to it), so the package's `tensorflow>=2.17` requirement
# is met and pip installs no second TensorFlow; TF_EXTRAS='[and-cuda]' adds the CUDA libraries.
ARG TF_EXTRAS=""
ARG TF_VERSION=2.21.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY setup.py pyproject.toml README.md ./
COPY wals2 ./wals2
COPY trainer ./trainer
COPY tuning ./tuning
# The retraining pipeline runs its gate step (python -m pipeline.gate) in this image.
COPY pipeline ./pipeline
# The same image serves: --entrypoint python IMAGE -m trainer.serve (uvicorn, Starlette, Prometheus, gRPC).
COPY serving ./serving

# jobs/: the trainer's default output directory (a run without --job-dir or $AIP_MODEL_DIR), the user's to write.
RUN pip install --no-cache-dir "tensorflow${TF_EXTRAS}==${TF_VERSION}" "./[vertex,serve]" \
    && useradd --uid 1000 --create-home trainer \
    && install -d -o 1000 -g 1000 /app/jobs

USER 1000
ENTRYPOINT ["python", "-m", "trainer.task"]

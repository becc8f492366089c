"""LLMs as tools of the pipeline: annotator and judge backends (transformers, vLLM, any OpenAI-compatible server,
programmatic), the judge (``midtrain judge``) and a small OpenAI-compatible test server."""

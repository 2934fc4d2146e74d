"""The REST chat API (FastAPI) and the Python client SDK (`api.client`, httpx + pydantic only)."""

from support.fixtures import fake_openai, fast_retries  # noqa: F401

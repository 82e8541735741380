"""One router per concern; `api.main.create_app` includes them all."""

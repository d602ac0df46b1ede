"""One router per area of the API; `api.main.create_app` includes them all."""

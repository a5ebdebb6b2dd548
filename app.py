"""The WSGI entry point: ``flask --app app run`` or any WSGI server pointing at ``app:app``."""

from smtpsite import create_app

app = create_app()

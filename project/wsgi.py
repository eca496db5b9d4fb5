import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django's handler (its setup loads the apps, which register their lean paths), behind the
# dispatch to those paths (project.lean): the write endpoints skip Django's request machinery.
django_application = get_wsgi_application()

from project.lean import lean_application  # noqa: E402 (needs the settings configured above)
from project.request_metrics import request_metrics_application  # noqa: E402

# Counted around both paths, so a write answered by the lean path counts like any other request.
application = request_metrics_application(lean_application(django_application))

# Once per web process, under any WSGI server (gunicorn's workers, the dev server): an ERROR
# line when the staging Redis would lose or evict accepted messages. Never stops the start.
from project.redis import redis_durability_warn  # noqa: E402 (needs the settings configured above)

redis_durability_warn()

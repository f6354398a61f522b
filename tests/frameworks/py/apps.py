"""Python sign-up apps for tests/differential.rs, one per framework, each reading the identifier
the way that framework does:

  fastapi  FastAPI/Starlette under uvicorn (h11): FastAPI's body rule (JSON when the type is
           application/json or */*+json, or when there is no type), request.form() through
           python-multipart (urlencoded and multipart; .get() keeps the last value)
  flask    Flask/Werkzeug on Werkzeug's server: request.get_json(silent=True), request.form
           (first value), request.values (query first, then form)
  django   Django on wsgiref (runserver's base): json.loads(request.body) for application/json,
           request.POST (QueryDict: last value), request.GET

Every gated path has a handler that records what it read and echoes it; GET /__reads (called by
the test directly, never through the gate) returns and clears the record. Binds 127.0.0.1:0 and
prints "LISTENING <port>". Usage: python apps.py fastapi|flask|django
"""

import json
import os
import socket
import sys
import threading

FIELDS = {
    "/api/sign-up": "email",
    "/api/sign-in": "email",
    "/api/phone": "phone",
    "/api/wallet": "web3_wallet",
}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
READS = []


def record(path, method, url, **reads):
    entry = {"handler": path, "method": method, "url": url, "reads": reads}
    READS.append(entry)
    return entry


def take():
    out = list(READS)
    READS.clear()
    return out


def listening(port):
    print(f"LISTENING {port}", flush=True)
    # The test holds our stdin open; when it ends (the test finished or died), so do we.
    threading.Thread(target=exit_on_eof, daemon=True).start()


def exit_on_eof():
    sys.stdin.read()
    os._exit(0)


def jsonable(v):
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def run_fastapi():
    import email.message

    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.middleware("http")
    async def mark(request, call_next):
        # Every answer of the app, errors included, says it came from the app.
        response = await call_next(request)
        response.headers["x-app"] = "fastapi"
        return response

    @app.get("/__reads")
    def reads_endpoint():
        return take()

    def make(path, field):
        async def handler(request: Request):
            ctype = request.headers.get("content-type")
            body = None
            if ctype and (
                ctype.lower().startswith("application/x-www-form-urlencoded")
                or ctype.lower().startswith("multipart/form-data")
            ):
                form = await request.form()
                body = form.get(field)
            else:
                raw = await request.body()
                if raw:
                    # FastAPI's routing.get_request_handler: JSON when there is no content
                    # type, or it is application/json or application/*+json.
                    is_json = not ctype
                    if ctype:
                        m = email.message.Message()
                        m["content-type"] = ctype
                        sub = m.get_content_subtype()
                        is_json = m.get_content_maintype() == "application" and (
                            sub == "json" or sub.endswith("+json")
                        )
                    if is_json:
                        try:
                            doc = await request.json()
                        except ValueError:
                            return JSONResponse({"error": "bad json"}, status_code=422)
                        if isinstance(doc, dict):
                            body = doc.get(field)
            entry = record(
                path,
                request.method,
                str(request.url),
                body=jsonable(body),
                query=request.query_params.get(field),
            )
            return JSONResponse(entry)

        return handler

    for path, field in FIELDS.items():
        app.add_api_route(path, make(path, field), methods=METHODS)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    listening(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", http="h11", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def run_flask():
    from flask import Flask, jsonify, request
    from werkzeug.serving import make_server

    app = Flask(__name__)

    @app.after_request
    def mark(response):
        # Every answer of the app, errors included, says it came from the app.
        response.headers["x-app"] = "flask"
        return response

    @app.get("/__reads")
    def reads_endpoint():
        return jsonify(take())

    def make(path, field):
        def handler():
            doc = request.get_json(silent=True)
            entry = record(
                path,
                request.method,
                request.full_path,
                json=jsonable(doc.get(field)) if isinstance(doc, dict) else None,
                form=request.form.get(field),
                query=request.args.get(field),
                values=request.values.get(field),
            )
            return jsonify(entry)

        return handler

    for path, field in FIELDS.items():
        app.add_url_rule(path, path, make(path, field), methods=METHODS)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    listening(server.port)
    server.serve_forever()


def mark(get_response):
    """Django middleware: every answer of the app, errors included, says it came from the app."""

    def middleware(request):
        response = get_response(request)
        response["x-app"] = "django"
        return response

    return middleware


def run_django():
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="idgate-differential-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["__main__.mark", "django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    import django

    django.setup()
    from django.core.wsgi import get_wsgi_application
    from django.http import JsonResponse
    from django.urls import path as route
    from django.views.decorators.csrf import csrf_exempt

    def reads_view(request):
        return JsonResponse(take(), safe=False)

    def make(path, field):
        @csrf_exempt
        def view(request):
            body = None
            if request.content_type == "application/json" and request.body:
                try:
                    doc = json.loads(request.body)
                except ValueError:
                    return JsonResponse({"error": "bad json"}, status=400)
                if isinstance(doc, dict):
                    body = doc.get(field)
            entry = record(
                path,
                request.method,
                request.get_full_path(),
                json=jsonable(body),
                post=request.POST.get(field),
                query=request.GET.get(field),
            )
            return JsonResponse(entry)

        return view

    global urlpatterns
    urlpatterns = [route("__reads", reads_view)] + [
        route(p.lstrip("/"), make(p, f)) for p, f in FIELDS.items()
    ]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
    listening(server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    {"fastapi": run_fastapi, "flask": run_flask, "django": run_django}[sys.argv[1]]()

"""A tiny SMTP server for idgate's delivery tests (tests/delivery.rs).

aiosmtpd on 127.0.0.1:PORT. Every message it accepts is written to DIR as one JSON file
({"mail_from", "rcpt_tos", "data", "tls", "auth_user"}), atomically (written under a dot name,
then renamed), so a test can count and read what arrived. Prints "READY <port>" once listening.

Options: --cert/--key offer STARTTLS and require it before MAIL (with --implicit: TLS from the
first byte instead, SMTPS); --user/--password require
AUTH (PLAIN/LOGIN) with those credentials; --fail-first N answers the first N messages with a
temporary 451 after DATA; --delay S waits S seconds before accepting each message.
"""

import argparse
import asyncio
import itertools
import json
import os
import signal
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Handler:
    def __init__(self, out, fail_first, delay):
        self.out = out
        self.fail_left = fail_first
        self.delay = delay
        self.counter = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        if self.fail_left > 0:
            self.fail_left -= 1
            return "451 4.3.0 Try again later"
        if self.delay:
            await asyncio.sleep(self.delay)
        n = next(self.counter)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", errors="replace"),
            # STARTTLS sets session.ssl; an implicit-TLS transport carries its SSL object.
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "auth_user": session.auth_data.login.decode() if session.auth_data else None,
        }
        name = f"{time.time_ns()}-{os.getpid()}-{n}.json"
        tmp = os.path.join(self.out, "." + name)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, name))
        return "250 2.0.0 Message accepted for delivery"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--implicit", action="store_true")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)

    kwargs = {}
    controller_kwargs = {}
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        if a.implicit:
            controller_kwargs["ssl_context"] = ctx
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
    if a.user:

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == a.user and auth_data.password.decode() == a.password
            return AuthResult(success=ok, auth_data=auth_data if ok else None)

        # aiosmtpd only counts STARTTLS as TLS for AUTH; an implicit-TLS connection is TLS
        # from the first byte.
        kwargs.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=bool(a.cert) and not a.implicit)

    controller = Controller(Handler(a.dir, a.fail_first, a.delay), hostname="127.0.0.1",
                            port=a.port, **controller_kwargs, **kwargs)
    controller.start()
    print(f"READY {a.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    controller.stop()


if __name__ == "__main__":
    sys.exit(main())

"""A Standard Webhooks receiver that verifies every request with the `standardwebhooks`
package (an implementation apart from CityStream's), for scripts/test-openapi.sh.

    receiver.py SECRET PORT_FILE COUNT_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE), answers 204 to a request whose
signature verifies and 401 to one that does not, and keeps in COUNT_FILE a JSON object:
{"verified": n, "refused": n, "ids": [distinct webhook-ids verified]}.
"""

import http.server
import json
import sys
import threading

from standardwebhooks.webhooks import Webhook

secret, port_file, count_file = sys.argv[1:4]
hook = Webhook(secret)
lock = threading.Lock()
state = {"verified": 0, "refused": 0, "ids": set()}


def save():
    out = dict(state, ids=sorted(state["ids"]))
    with open(count_file + ".new", "w") as f:
        json.dump(out, f)
    import os
    os.replace(count_file + ".new", count_file)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = hook.verify(body, headers)
            ok = payload["type"] == "alert.fired"
        except Exception as e:  # noqa: BLE001 - any failure is a refusal
            print(f"refused: {e}", file=sys.stderr)
            ok = False
        with lock:
            if ok:
                state["verified"] += 1
                state["ids"].add(headers["webhook-id"])
            else:
                state["refused"] += 1
            save()
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()

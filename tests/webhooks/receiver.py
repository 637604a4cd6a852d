"""A webhook receiver for the end-to-end tests: verifies every delivery with the official
`standardwebhooks` library (not with our code) and records it.

    receiver.py PORT SECRET RECORD_FILE [ok|fail]

Each verified delivery appends one JSON line to RECORD_FILE (appended across restarts):
{"webhook_id", "event_id", "subject", "type", "version", "mode"}. A delivery whose
signature does not verify is answered 401 and recorded with "verified": false, so the test
sees it. In `fail` mode every verified delivery is answered 503 (and recorded with
"mode": "fail"): a receiver that is up but broken.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

PORT = int(sys.argv[1])
SECRET = sys.argv[2]
RECORDS = sys.argv[3]
MODE = sys.argv[4] if len(sys.argv) > 4 else "ok"
HOOK = Webhook(SECRET)


def record(entry):
    with open(RECORDS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            HOOK.verify(body, headers)
        except WebhookVerificationError as e:
            record({"verified": False, "error": str(e), "webhook_id": headers.get("webhook-id")})
            self.send_response(401)
            self.end_headers()
            return
        event = json.loads(body)
        data = event.get("data", {})
        record({
            "verified": True,
            "mode": MODE,
            "webhook_id": headers["webhook-id"],
            "event_id": event["id"],
            "type": event["type"],
            "subject": event["subject"],
            "sku": data.get("sku"),
            "version": data.get("version"),
        })
        self.send_response(503 if MODE == "fail" else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print("ready", flush=True)
    server.serve_forever()

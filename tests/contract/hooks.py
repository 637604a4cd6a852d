"""schemathesis hooks of scripts/api-contract.sh (loaded through SCHEMATHESIS_HOOKS).

`POST /v1/imports` takes NDJSON, a media type schemathesis has no serializer for. The
request body is documented as a string (the file's text), so a string goes on the wire as
its UTF-8 bytes. A generated value that is not a string (the negative phase's "incorrect
type") is not a file at all: it is sent as no content, which the upload refuses (422, an
import holds at least one row), as it must refuse a body that is not a file.
"""

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return b""

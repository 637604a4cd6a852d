"""A client generated from stockflow's /openapi.json drives one order end to end.

scripts/api-contract.sh generates the `stockflow_client` package with openapi-python-client
and runs this against a fresh `stockflow dev`: catalog → stock → reserve → confirm → query,
and the refusals a client branches on, all through the generated functions and models (no
hand-written HTTP). Any mismatch between the document and the server shows as a parse
failure or a wrong type here.
"""

import os
import sys
import time
import uuid

from stockflow_client import AuthenticatedClient
from stockflow_client.api.catalog import put_location, put_sku
from stockflow_client.api.commands import adjust, confirm, get_reservation, reserve
from stockflow_client.api.queries import availability, search, stock_at
from stockflow_client.models import (
    Delta,
    DeltaReason,
    LineBody,
    LocationRequest,
    LocationRequestKind,
    Problem,
    ProblemCode,
    ReservationRequest,
    SkuRequest,
    SkuRequestAttributes,
)


def check(condition, what):
    if not condition:
        print(f"generated client: FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def key():
    return f"py-{uuid.uuid4()}"


def main():
    client = AuthenticatedClient(base_url=os.environ["STOCKFLOW_URL"], token=os.environ["STOCKFLOW_TOKEN"])
    run = uuid.uuid4().hex[:8]
    sku, store = f"PY-{run}", f"py-store-{run}"

    location = put_location.sync(
        store,
        client=client,
        body=LocationRequest(region="north", kind=LocationRequestKind.STORE, name="Python store"),
    )
    check(location is not None and location.region == "north", f"put_location answered {location!r}")
    attributes = SkuRequestAttributes.from_dict({"brand": "Generated"})
    catalog = put_sku.sync(sku, client=client, body=SkuRequest(name="Generated trail shoe", attributes=attributes))
    check(catalog is not None and catalog.sku == sku, f"put_sku answered {catalog!r}")

    level = adjust.sync(
        client=client,
        idempotency_key=key(),
        body=Delta(sku=sku, location=store, delta=10, reason=DeltaReason.RECEIPT),
    )
    check(level is not None and level.on_hand == 10 and level.available == 10, f"adjust answered {level!r}")

    reservation_id = f"cart-{run}"
    order_key = key()
    request = ReservationRequest(
        reservation_id=reservation_id,
        lines=[LineBody(sku=sku, location=store, qty=3)],
        ttl_seconds=600,
        reference="order-py",
    )
    held = reserve.sync_detailed(client=client, idempotency_key=order_key, body=request)
    check(held.status_code == 201, f"reserve answered {held.status_code}: {held.content!r}")
    check(held.parsed.status == "active" and held.parsed.lines[0].qty == 3, f"reservation {held.parsed!r}")
    again = reserve.sync_detailed(client=client, idempotency_key=order_key, body=request)
    check(again.status_code == 201 and again.headers.get("idempotent-replayed") == "true",
          f"a retry with the same key answered {again.status_code} {dict(again.headers)!r}")

    too_much = reserve.sync_detailed(
        client=client,
        idempotency_key=key(),
        body=ReservationRequest(lines=[LineBody(sku=sku, location=store, qty=8)]),
    )
    check(isinstance(too_much.parsed, Problem) and too_much.parsed.code == ProblemCode.INSUFFICIENT_STOCK,
          f"reserving more than is available answered {too_much.status_code}: {too_much.content!r}")

    sold = confirm.sync(reservation_id, client=client, idempotency_key=key())
    check(sold is not None and sold.status == "confirmed", f"confirm answered {sold!r}")
    check(get_reservation.sync(reservation_id, client=client).status == "confirmed", "the reservation reads back confirmed")

    # The read model follows within milliseconds; give it a generous second.
    deadline = time.monotonic() + 5
    while True:
        row = stock_at.sync(sku, store, client=client)
        if row is not None and not isinstance(row, Problem) and row.on_hand == 7 and row.reserved == 0:
            break
        check(time.monotonic() < deadline, f"the read model still shows {row!r}")
        time.sleep(0.05)
    regions = availability.sync(sku, client=client, region="north")
    check(regions.total_available == 7, f"availability answered {regions!r}")
    hits = search.sync(client=client, q="generated trail", in_stock=True)
    check([h.sku for h in hits.hits] == [sku], f"search answered {hits!r}")

    unknown = get_reservation.sync_detailed("no-such-cart", client=client)
    check(unknown.status_code == 404 and unknown.parsed.code == ProblemCode.RESERVATION_NOT_FOUND,
          f"an unknown reservation answered {unknown.status_code}: {unknown.content!r}")
    print("generated client: catalog, adjust, reserve (and its replay), refusal, confirm and queries all passed")


if __name__ == "__main__":
    main()

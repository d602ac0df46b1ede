"""Small builders for domain tests: events on event time, a tiny catalog."""

import orjson

from online_models.events import DAY_MS, Event, Item, Product

T0 = 1_795_601_700_000  # 2026-11-25T10:15:00Z


def day(n: float) -> int:
    return T0 + int(n * DAY_MS)


def purchase(event_id, customer="c-1", skus=("TR-1",), ts=T0, price=50.0, store=None, **kw):
    items = tuple(Item(sku, 1, price) for sku in skus)
    return Event(event_id, "purchase", ts, "store" if store else "web", customer_id=customer,
                 store_id=store, order_id=f"o-{event_id}", items=items, **kw)


def event(event_id, kind, ts=T0, customer="c-1", **kw):
    return Event(event_id, kind, ts, kw.pop("channel", "web"), customer_id=customer, **kw)


CATALOG = {p.sku: p for p in [
    Product("TR-1", "Slim trousers", "men/trousers", "Northway", 50),
    Product("TR-2", "Chino trousers", "men/trousers", "Northway", 60),
    Product("BL-1", "Leather belt", "men/belts", "Northway", 20),
    Product("SK-1", "Wool socks", "men/socks", "Linea", 8),
    Product("SH-1", "Oxford shirt", "men/shirts", "Linea", 40),
    Product("CF-1", "Coffee beans", "grocery/coffee", "Bean Co", 9),
    Product("BS-1", "Boys shirt", "kids/boys/shirts", "Kido", 15),
    Product("BS-2", "Boys polo shirt", "kids/boys/shirts", "Kido", 12),
    Product("BT-1", "Boys trousers", "kids/boys/trousers", "Kido", 18),
    Product("GD-1", "Girls dress", "kids/girls/dresses", "Kido", 25),
    Product("GS-1", "Girls shirt", "kids/girls/shirts", "Kido", 15),
    Product("PH-1", "Phone", "electronics/phones", "Fone", 500),
    Product("PC-1", "Phone case", "electronics/phone-cases", "Fone", 20),
    Product("XX-1", "Out of stock belt", "men/belts", "Northway", 20, in_stock=False),
]}


class MemoryPipe:
    """Stands in for a Redis pipeline: what each write op would leave in Redis, by slot."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str | None], bytes | float | None] = {}

    def set(self, key, value, ex=None):  # a TTL (ex) does not change what is stored
        self.data[(key, None)] = value

    def hset(self, key, field, value):
        self.data[(key, field)] = value

    def zadd(self, key, mapping):
        for member, score in mapping.items():
            self.data[(key, member)] = score

    def sadd(self, key, member):
        self.data[(key, "\x00" + member)] = None

    def delete(self, key):
        for slot in [slot for slot in self.data if slot[0] == key]:
            del self.data[slot]

    def eval(self, script, numkeys, key, *args):
        from online_models.messages import DELETE_ALERTS_OF

        if script == DELETE_ALERTS_OF:  # the customer's alerts out, with their seen keys
            customer_id, seen_prefix = args
            for slot, payload in list(self.data.items()):
                if slot[0].startswith(seen_prefix) and orjson.loads(payload)["customer_id"] == customer_id:
                    del self.data[slot]
            return
        seen_key, payload = args[0], args[1]
        self.data.setdefault((seen_key, None), payload)  # an alert is added once


class Observed:
    """A customer's churn rhythm built the way the flow builds it: events folded into a
    ``CustomerState``, read through ``rhythm_view()`` (tests pass it wherever a ``Rhythm`` goes)."""

    def __init__(self, customer_id: str = "c") -> None:
        from online_models.customer import CustomerState

        self.state = CustomerState(customer_id)

    def observe(self, event) -> None:
        from online_models.decay import Decay

        self.state.apply(event, Decay(14.0))

    @property
    def view(self):
        return self.state.rhythm_view()

    def __getattr__(self, name):
        if name.startswith("__") or name == "state":
            raise AttributeError(name)
        return getattr(self.state.rhythm_view(), name)

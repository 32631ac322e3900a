"""The route names of the load's statistics and which profile runs which, shared by the locust
process (``locustfile``) and the runner and its test (which must not import locust).

One row per route whatever the id or name in the path, so ``/products/{id}`` is one row for
the reads (GET) and one for the deletes (DELETE).
"""

from __future__ import annotations

REGISTER = "/register_user"
LOGIN = "/login_user"
ADD = "/add_product"
LIST = "/get_products"
PRODUCT = "/products/{id}"
USER = "/users/{u}"

# (method, name) of every route each profile's users send; the test holds a short run to it.
MIX_ROUTES = frozenset(
    {
        ("POST", REGISTER),
        ("POST", LOGIN),
        ("GET", LIST),
        ("GET", PRODUCT),
        ("POST", ADD),
        ("GET", USER),
        ("DELETE", PRODUCT),
    }
)
SEED_ROUTES = frozenset({("POST", REGISTER), ("POST", LOGIN), ("POST", ADD), ("GET", LIST)})

# The locustfile's user class of each profile.
USER_CLASS = {"mix": "MixUser", "seed": "SeedUser"}

"""moto's server mode as the local DynamoDB endpoint, without an access-log line per call.

The services already log one JSON line per request with its request id; werkzeug's extra line for
every DynamoDB call made ``make run``'s output mostly noise. Warnings and errors still show.
"""

from __future__ import annotations

import logging
import sys

from moto.server import main

if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    main(sys.argv[1:])

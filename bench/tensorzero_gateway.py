#!/usr/bin/env python3
"""TensorZero's gateway as a bench peer: the `tensorzero` wheel (PyPI) embeds the
gateway and can serve it over HTTP from this process. Usage:
    tensorzero_gateway.py CONFIG.toml     prints the gateway's base URL, then serves
until killed. Without a ClickHouse or PostgreSQL URL it keeps no records (its
observability is off), which the bench report says."""
import sys
import time

import tensorzero


def main():
    gateway = tensorzero._start_http_gateway(config_file=sys.argv[1], clickhouse_url=None, postgres_url=None,
                                             valkey_url=None, async_setup=False)
    print(gateway.base_url, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()

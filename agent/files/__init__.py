"""The staff-machine file sensor: where customer data leaves the database world and lands in files.

`watch` runs the watchdog observers and supervises them, `debounce` turns editors' and browsers' bursts of
events into one finished file, `pipeline` attributes, classifies and spools it, `classify` and `detect` count
customer identifiers in its content, `mounts` knows removable, network and sync destinations.
"""

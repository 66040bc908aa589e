"""Example application packaged into the runtime images."""

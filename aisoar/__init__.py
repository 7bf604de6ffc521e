"""aisoar: SOAR for incidents in AI systems, on Prefect."""

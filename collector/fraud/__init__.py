"""Loan-fraud linkage: business events from the lending systems, the index that ties customer keys to the reads
and the business events that name them, the common-point-of-compromise ranking, the victim-centric look-up and
the evidence export."""

"""The pure domain of omnirec: no Kafka, Redis or HTTP imports live here."""

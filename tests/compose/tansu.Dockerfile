# The test's stand-in for the apache/kafka image, which cannot be pulled here: tansu 0.6.0 (the
# Kafka-protocol broker of the other tests) on the locally built debian:bookworm-slim.
FROM debian:bookworm-slim
COPY tansu /usr/local/bin/tansu
ENTRYPOINT ["tansu"]

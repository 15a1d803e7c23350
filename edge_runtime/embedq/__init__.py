"""The catalog queue's consumer on an edge node: embed jobs from NATS JetStream, run through the
node's batcher at low priority, vectors back to central (see ``artifacts.embed_queue``)."""

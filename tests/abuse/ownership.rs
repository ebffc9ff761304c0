//! Internal names and their owners: session, subscription and temporary queues.

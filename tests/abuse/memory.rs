//! Memory bounds: unacknowledged bytes, transactions, retained messages, route fan-out.

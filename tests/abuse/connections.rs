//! Connection limits: per peer address, connect rate, idle STOMP connections.

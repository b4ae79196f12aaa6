//! ICMP error synthesis (being written).

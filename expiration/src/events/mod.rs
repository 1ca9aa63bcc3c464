//! Listeners: the schedule learns of orders from `order.created`.

mod order_created;

pub use order_created::OrderCreatedListener;

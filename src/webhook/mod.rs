//! Webhook delivery: the [`Webhook`] value, signing (Standard Webhooks) and sending.

pub(crate) mod sign;

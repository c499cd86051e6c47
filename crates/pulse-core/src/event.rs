//! Domain events: what a customer did, already validated and normalised by ingest.
//!
//! Times are UTC epoch milliseconds; money is integer minor units plus an ISO-4217 code.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. The only time type of the core.
pub type Millis = i64;

pub const SECOND: Millis = 1_000;
pub const MINUTE: Millis = 60 * SECOND;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;

/// The UTC day number of `t` (days since the epoch, floored).
pub fn day_of(t: Millis) -> i64 {
    t.div_euclid(DAY)
}

/// One validated customer event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub customer_id: String,
    pub occurred_at: Millis,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Body {
    Order(Order),
    Click(Click),
    Support(Support),
    /// The customer asked to be forgotten. Fold deletes everything it holds for them.
    Erased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    Placed,
    Cancelled,
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub kind: OrderKind,
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub item_count: u32,
    pub channel: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickKind {
    PageView,
    ProductView,
    Search,
    AddToCart,
    RemoveFromCart,
    CheckoutStarted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Click {
    pub kind: ClickKind,
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupportKind {
    TicketOpened,
    TicketFirstResponse,
    TicketResolved,
    CsatSubmitted,
    NpsSubmitted,
    FeedbackSubmitted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Support {
    pub kind: SupportKind,
    pub ticket_id: Option<String>,
    /// CSAT 1–5 or NPS 0–10, range-checked by ingest.
    pub score: Option<u8>,
    /// Feedback sentiment in -1..=1. Free text is scored at the edge and never stored.
    pub sentiment: Option<f32>,
}

impl ClickKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClickKind::PageView => "page_view",
            ClickKind::ProductView => "product_view",
            ClickKind::Search => "search",
            ClickKind::AddToCart => "add_to_cart",
            ClickKind::RemoveFromCart => "remove_from_cart",
            ClickKind::CheckoutStarted => "checkout_started",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "page_view" => ClickKind::PageView,
            "product_view" => ClickKind::ProductView,
            "search" => ClickKind::Search,
            "add_to_cart" => ClickKind::AddToCart,
            "remove_from_cart" => ClickKind::RemoveFromCart,
            "checkout_started" => ClickKind::CheckoutStarted,
            _ => return None,
        })
    }
}

impl OrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Placed => "order_placed",
            OrderKind::Cancelled => "order_cancelled",
            OrderKind::Refunded => "order_refunded",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "order_placed" => OrderKind::Placed,
            "order_cancelled" => OrderKind::Cancelled,
            "order_refunded" => OrderKind::Refunded,
            _ => return None,
        })
    }
}

impl SupportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SupportKind::TicketOpened => "ticket_opened",
            SupportKind::TicketFirstResponse => "ticket_first_response",
            SupportKind::TicketResolved => "ticket_resolved",
            SupportKind::CsatSubmitted => "csat_submitted",
            SupportKind::NpsSubmitted => "nps_submitted",
            SupportKind::FeedbackSubmitted => "feedback_submitted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ticket_opened" => SupportKind::TicketOpened,
            "ticket_first_response" => SupportKind::TicketFirstResponse,
            "ticket_resolved" => SupportKind::TicketResolved,
            "csat_submitted" => SupportKind::CsatSubmitted,
            "nps_submitted" => SupportKind::NpsSubmitted,
            "feedback_submitted" => SupportKind::FeedbackSubmitted,
            _ => return None,
        })
    }
}

impl Body {
    /// A bounded name for metrics and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Body::Order(o) => o.kind.as_str(),
            Body::Click(c) => c.kind.as_str(),
            Body::Support(s) => s.kind.as_str(),
            Body::Erased => "customer_erased",
        }
    }
}

//! The sample payloads of each provider's documentation (`samples/` in the repository), compiled
//! in so `webhook-bridge send` can replay them exactly as the provider would.

macro_rules! sample {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/", $path))
    };
}

pub const MODEXPRESS_IN_PROGRESS: &[u8] = sample!("modexpress/in_progress.json");
pub const WEGOCOD_DELIVERED: &[u8] = sample!("wegocod/delivered.json");
pub const PEDDLER_CONFIRMED: &[u8] = sample!("peddler/shipment_confirmed.json");
pub const PEDDLER_OUT_FOR_DELIVERY: &[u8] = sample!("peddler/out_for_delivery.json");
pub const ISENDU_HANDSHAKE: &[u8] = sample!("isendu/handshake.json");
pub const ISENDU_BATCH: &[u8] = sample!("isendu/batch.json");
pub const MAILSHIP_EXPEDITION_STATUS: &[u8] = sample!("mailship/expedition_status.json");
pub const MAILSHIP_EXPEDITION_BOOKED: &[u8] = sample!("mailship/expedition_booked.json");
pub const MAILSHIP_PRODUCT_STOCK: &[u8] = sample!("mailship/product_stock.json");
pub const MAILSHIP_PRODUCT_CHANGE: &[u8] = sample!("mailship/product_change.json");
pub const MAILSHIP_STOCK_ADVICE: &[u8] = sample!("mailship/stock_advice.json");
/// GitHub-style push (event name in `X-GitHub-Event`), for generic endpoints.
pub const GENERIC_GITHUB_PUSH: &[u8] = sample!("generic/github_push.json");
/// A Standard Webhooks style event (`type` in the body), for generic endpoints.
pub const GENERIC_INVOICE_PAID: &[u8] = sample!("generic/invoice_paid.json");

/// A named sample of one provider.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub provider: &'static str,
    pub name: &'static str,
    pub body: &'static [u8],
}

/// Every bundled sample, by provider and name (`webhook-bridge send --sample NAME`).
pub const ALL: &[Sample] = &[
    Sample {
        provider: "modexpress",
        name: "in_progress",
        body: MODEXPRESS_IN_PROGRESS,
    },
    Sample {
        provider: "wegocod",
        name: "delivered",
        body: WEGOCOD_DELIVERED,
    },
    Sample {
        provider: "peddler",
        name: "shipment_confirmed",
        body: PEDDLER_CONFIRMED,
    },
    Sample {
        provider: "peddler",
        name: "out_for_delivery",
        body: PEDDLER_OUT_FOR_DELIVERY,
    },
    Sample {
        provider: "isendu",
        name: "handshake",
        body: ISENDU_HANDSHAKE,
    },
    Sample {
        provider: "isendu",
        name: "batch",
        body: ISENDU_BATCH,
    },
    Sample {
        provider: "mailship",
        name: "expedition_status",
        body: MAILSHIP_EXPEDITION_STATUS,
    },
    Sample {
        provider: "mailship",
        name: "expedition_booked",
        body: MAILSHIP_EXPEDITION_BOOKED,
    },
    Sample {
        provider: "mailship",
        name: "product_stock",
        body: MAILSHIP_PRODUCT_STOCK,
    },
    Sample {
        provider: "mailship",
        name: "product_change",
        body: MAILSHIP_PRODUCT_CHANGE,
    },
    Sample {
        provider: "mailship",
        name: "stock_advice",
        body: MAILSHIP_STOCK_ADVICE,
    },
    Sample {
        provider: "generic",
        name: "invoice_paid",
        body: GENERIC_INVOICE_PAID,
    },
    Sample {
        provider: "generic",
        name: "github_push",
        body: GENERIC_GITHUB_PUSH,
    },
];

/// Samples of one provider.
pub fn of(provider: &str) -> impl Iterator<Item = &'static Sample> + '_ {
    ALL.iter().filter(move |s| s.provider == provider)
}

/// Look a sample up by provider and name.
pub fn find(provider: &str, name: &str) -> Option<&'static Sample> {
    of(provider).find(|s| s.name == name)
}

//! Where one run keeps its records in Redis (and its NATS KV buckets).

/// Names of everything one run keeps in Redis.
#[derive(Clone)]
pub struct Keys {
    pub run: String,
}

impl Keys {
    pub fn prefix(&self) -> String {
        format!("wharf-test:cluster:{}:", self.run)
    }
    pub fn effect(&self, key: &str) -> String {
        format!("{}effect:{key}", self.prefix())
    }
    pub fn effects(&self) -> String {
        format!("{}effects", self.prefix())
    }
    pub fn order(&self, session: &str) -> String {
        format!("{}order:{session}", self.prefix())
    }
    pub fn spans(&self) -> String {
        format!("{}spans", self.prefix())
    }
    /// `id pid µs` of every job run as it starts.
    pub fn job_starts(&self) -> String {
        format!("{}job-starts", self.prefix())
    }
    /// `id pid µs` of every job run as it ends.
    pub fn job_ends(&self) -> String {
        format!("{}job-ends", self.prefix())
    }
    pub fn ready(&self) -> String {
        format!("{}ready", self.prefix())
    }
    pub fn live(&self, pid: u32) -> String {
        format!("{}live:{pid}", self.prefix())
    }
    pub fn store_prefix(&self) -> String {
        format!("{}store:", self.prefix())
    }
    /// NATS KV bucket prefix (bucket names allow `[A-Za-z0-9_-]`).
    pub fn bucket_prefix(&self) -> String {
        let run: String = self
            .run
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("wharftest_{run}")
    }
}

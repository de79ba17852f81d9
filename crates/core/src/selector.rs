//! Label selectors over devices, in the Kubernetes style:
//! `fleet=West,model!=H-1,region,!retired` (comma means AND).

use std::collections::BTreeMap;
use std::fmt;

use crate::model::ValidationError;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed selector. The empty selector matches every device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses `k=v`, `k==v`, `k!=v`, `k` and `!k`, comma-separated.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(k)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key(k)?, v.trim().to_string())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(key(k)?)
            } else {
                Requirement::Exists(key(part)?)
            };
            requirements.push(req);
        }
        if requirements.len() > 32 {
            return Err(ValidationError::new(
                "selector",
                "more than 32 requirements",
            ));
        }
        Ok(Self { requirements })
    }

    /// Whether a device with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn key(k: &str) -> Result<String, ValidationError> {
    let k = k.trim();
    if k.is_empty()
        || k.len() > 63
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
    {
        return Err(ValidationError::new(
            "selector",
            format!("invalid label key {k:?}"),
        ));
    }
    Ok(k.to_string())
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_and_match() {
        let s = Selector::parse("fleet=West, model!=H-1,region,!retired").unwrap();
        assert_eq!(s.requirements.len(), 4);
        assert!(s.matches(&labels(&[
            ("fleet", "West"),
            ("model", "H-2"),
            ("region", "eu")
        ])));
        assert!(!s.matches(&labels(&[("fleet", "East"), ("region", "eu")])));
        assert!(!s.matches(&labels(&[
            ("fleet", "West"),
            ("model", "H-1"),
            ("region", "eu")
        ])));
        assert!(!s.matches(&labels(&[
            ("fleet", "West"),
            ("region", "eu"),
            ("retired", "")
        ])));
        assert_eq!(s.to_string(), "fleet=West,model!=H-1,region,!retired");
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
        assert!(Selector::parse("=x").is_err());
        assert!(Selector::parse("a b=c").is_err());
    }
}

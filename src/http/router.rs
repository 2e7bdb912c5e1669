//! Path → endpoint, looked up once per request. Path-token endpoints match `<path>/<token>`
//! (and `<path>` alone, with an empty token); all others match exactly.

use std::collections::HashMap;
use std::ops::Range;

use crate::auth::AuthConfig;
use crate::config::EndpointConfig;

pub struct Router {
    exact: HashMap<String, usize>,
    token: HashMap<String, usize>,
}

/// Where a path leads: the endpoint's index, and for path-token endpoints where the token is in
/// the path (a range, so the route outlives no borrow of the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: usize,
    token: Option<Range<usize>>,
}

impl Route {
    /// The token segment of `path` (the path this route was found for), possibly empty.
    pub fn token<'p>(&self, path: &'p str) -> Option<&'p str> {
        self.token.clone().and_then(|r| path.get(r))
    }
}

impl Router {
    pub fn new(endpoints: &[EndpointConfig]) -> Self {
        let mut exact = HashMap::new();
        let mut token = HashMap::new();
        for (i, ep) in endpoints.iter().enumerate() {
            if matches!(ep.auth, AuthConfig::PathToken) {
                token.insert(ep.path.clone(), i);
            } else {
                exact.insert(ep.path.clone(), i);
            }
        }
        Self { exact, token }
    }

    pub fn route(&self, path: &str) -> Option<Route> {
        if let Some(&endpoint) = self.exact.get(path) {
            return Some(Route {
                endpoint,
                token: None,
            });
        }
        if let Some(&endpoint) = self.token.get(path) {
            return Some(Route {
                endpoint,
                token: Some(path.len()..path.len()),
            });
        }
        let (prefix, _) = path.rsplit_once('/')?;
        self.token.get(prefix).map(|&endpoint| Route {
            endpoint,
            token: Some(prefix.len() + 1..path.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::endpoint;

    #[test]
    fn router_matches_exact_and_token_paths() {
        let eps = vec![endpoint("wegocod"), endpoint("isendu")];
        let r = Router::new(&eps);
        let found = |path: &'static str| {
            r.route(path)
                .map(|route| (route.endpoint, route.token(path)))
        };
        assert_eq!(found("/webhooks/wegocod"), Some((0, None)));
        assert_eq!(found("/webhooks/wegocod/x"), None);
        assert_eq!(found("/webhooks/isendu/tok"), Some((1, Some("tok"))));
        assert_eq!(found("/webhooks/isendu"), Some((1, Some(""))));
        assert_eq!(found("/webhooks/isendu/a/b"), None);
        assert_eq!(found("/nope"), None);
    }
}

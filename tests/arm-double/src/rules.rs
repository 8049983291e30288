//! Azure's documented naming and tagging rules, written down once ("Naming rules and
//! restrictions for Azure resources", "Use tags to organize your Azure resources").

use serde_json::Value;

/// Why a name is refused: ARM's error code and message.
pub(crate) type Refusal = (&'static str, String);

fn chars_ok(name: &str, extra: &str) -> bool {
    name.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

fn first_alnum(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Checks a resource name against its type's rule; `kind` is the lower-case type key.
pub(crate) fn name(kind: &str, name: &str) -> Result<(), Refusal> {
    let len = name.chars().count();
    let ends_word = name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let ends_alnum = name.ends_with(|c: char| c.is_ascii_alphanumeric());
    // (whether the name is good, the rule as ARM words it)
    let (ok, rule) = match kind {
        "resourcegroups" => {
            let ok = (1..=90).contains(&len) && name.chars().all(|c| c.is_alphanumeric() || "_-.()".contains(c)) && !name.ends_with('.');
            if !ok {
                return Err((
                    "InvalidResourceGroup",
                    format!(
                        "The provided resource group name '{name}' has these invalid characters or length: it must be 1-90 characters of letters, digits, underscores, hyphens, periods and parentheses, and not end with a period."
                    ),
                ));
            }
            (true, "")
        }
        "microsoft.network/virtualnetworks" | "microsoft.network/privateendpoints" => (
            (2..=64).contains(&len) && chars_ok(name, "_.-") && first_alnum(name) && ends_word,
            "2-64 characters of letters, digits, underscores, periods and hyphens, starting with a letter or digit and ending with a letter, digit or underscore",
        ),
        "microsoft.network/virtualnetworks/subnets"
        | "microsoft.network/networksecuritygroups"
        | "microsoft.network/natgateways"
        | "microsoft.network/publicipaddresses" => (
            (1..=80).contains(&len) && chars_ok(name, "_.-") && first_alnum(name) && ends_word,
            "1-80 characters of letters, digits, underscores, periods and hyphens, starting with a letter or digit and ending with a letter, digit or underscore",
        ),
        "microsoft.network/privateendpoints/privatednszonegroups" | "microsoft.network/privatednszones/virtualnetworklinks" => (
            (1..=80).contains(&len) && chars_ok(name, "_.-") && first_alnum(name) && ends_word,
            "1-80 characters of letters, digits, underscores, periods and hyphens, starting with a letter or digit and ending with a letter, digit or underscore",
        ),
        // A DNS name of two or more labels, each 1-63 letters, digits and hyphens not
        // starting or ending with a hyphen; at most 253 characters.
        "microsoft.network/privatednszones" => (
            len <= 253
                && name.split('.').count() >= 2
                && name.split('.').all(|l| (1..=63).contains(&l.len()) && chars_ok(l, "-") && !l.starts_with('-') && !l.ends_with('-')),
            "a DNS name of at least two labels of letters, digits and hyphens",
        ),
        "microsoft.containerservice/managedclusters" => (
            (1..=63).contains(&len) && chars_ok(name, "_-") && first_alnum(name) && ends_alnum,
            "1-63 characters of letters, digits, underscores and hyphens, starting and ending with a letter or digit",
        ),
        "microsoft.containerservice/managedclusters/agentpools" => {
            let ok = (1..=12).contains(&len)
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name.starts_with(|c: char| c.is_ascii_lowercase());
            if !ok {
                return Err((
                    "InvalidParameter",
                    format!(
                        "The agent pool name '{name}' is invalid: a Linux agent pool name must be 1-12 lower-case letters and digits and start with a letter."
                    ),
                ));
            }
            (true, "")
        }
        "microsoft.storage/storageaccounts" => {
            let ok = (3..=24).contains(&len) && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !ok {
                return Err((
                    "AccountNameInvalid",
                    format!(
                        "{name} is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only."
                    ),
                ));
            }
            (true, "")
        }
        "microsoft.storage/storageaccounts/blobservices" | "microsoft.storage/storageaccounts/managementpolicies" => {
            (name == "default", "only 'default'")
        }
        "microsoft.storage/storageaccounts/blobservices/containers" => (
            (3..=63).contains(&len)
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && !name.ends_with('-')
                && !name.contains("--"),
            "3-63 characters of lower-case letters, digits and single hyphens, starting and ending with a letter or digit",
        ),
        "microsoft.managedidentity/userassignedidentities" => (
            (3..=128).contains(&len) && chars_ok(name, "_-") && first_alnum(name),
            "3-128 characters of letters, digits, hyphens and underscores, starting with a letter or digit",
        ),
        "microsoft.managedidentity/userassignedidentities/federatedidentitycredentials" => (
            (3..=120).contains(&len) && chars_ok(name, "_-") && first_alnum(name),
            "3-120 characters of letters, digits, hyphens and underscores, starting with a letter or digit",
        ),
        "microsoft.authorization/roleassignments" => {
            if !is_guid(name) {
                return Err((
                    "InvalidRoleAssignmentId",
                    format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
                ));
            }
            (true, "")
        }
        _ => (true, ""),
    };
    if ok {
        return Ok(());
    }
    Err(("InvalidResourceName", format!("Resource name {name} is invalid. The name can be {rule}.")))
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hexadecimal.
pub(crate) fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Tags: at most 50, names 1-512 characters without `< > % & \ ? /`, values up to 256.
pub(crate) fn tags(tags: Option<&Value>) -> Result<(), Refusal> {
    let Some(tags) = tags else { return Ok(()) };
    if tags.is_null() {
        return Ok(());
    }
    let Some(map) = tags.as_object() else {
        return Err(("InvalidRequestContent", "The request content was invalid: 'tags' must be an object of strings.".to_owned()));
    };
    if map.len() > 50 {
        return Err(("InvalidTagCount", format!("The resource has {} tags; at most 50 are allowed.", map.len())));
    }
    for (k, v) in map {
        if k.chars().any(|c| "<>%&\\?/".contains(c)) {
            return Err((
                "InvalidTagNameCharacters",
                format!("The tag names '{k}' have reserved characters '<,>,%,&,\\,?,/' or control characters."),
            ));
        }
        if k.is_empty() || k.chars().count() > 512 {
            return Err(("InvalidTagNameLength", format!("The tag name '{k}' must be 1-512 characters.")));
        }
        let Some(v) = v.as_str() else {
            return Err(("InvalidRequestContent", format!("The value of tag '{k}' must be a string.")));
        };
        if v.chars().count() > 256 {
            return Err(("InvalidTagValueLength", format!("The value of tag '{k}' is longer than 256 characters.")));
        }
    }
    Ok(())
}

/// An IPv4 prefix `a.b.c.d/n` as (network, length); host bits must be zero.
pub(crate) fn cidr(s: &str) -> Option<(u32, u8)> {
    let (addr, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let net = u32::from(addr);
    if net & !mask(len) != 0 {
        return None;
    }
    Some((net, len))
}

pub(crate) fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

/// Whether `inner` lies inside `outer`.
pub(crate) fn within(inner: (u32, u8), outer: (u32, u8)) -> bool {
    inner.1 >= outer.1 && inner.0 & mask(outer.1) == outer.0
}

/// Whether two prefixes share an address.
pub(crate) fn overlap(a: (u32, u8), b: (u32, u8)) -> bool {
    within(a, b) || within(b, a)
}

/// Whether an address lies in a prefix.
pub(crate) fn contains_ip(net: (u32, u8), ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| u32::from(ip) & mask(net.1) == net.0)
}

//! One handler per endpoint of spec/rest.md §3. Each decodes its fields (400 for missing or
//! mistyped ones), calls one core operation and maps the result. No policy is decided here.

use axum::http::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sso_core::audit::{AuditQuery, Outcome};
use sso_core::ids::RemoteAddr;
use sso_core::secret::{ConfirmToken, Password, PrtToken, ResetKey, SecretStr, TotpCode, TotpKeyText, Ust};
use sso_core::service::{
    AttrInput, AttrTarget, ChangePassword, ListTarget, NewUser, SearchCtx, SessionRef, SignupCtx, TotpTarget,
    UserUpdate,
};
use sso_core::time::Timestamp;
use sso_core::{Code, SsoError};

use super::App;
use super::input::Req;
use super::reply::Reply;

type Out = Result<Reply, Reply>;

/// Attribute scope of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `…/user/attr…`
    User,
    /// `…/session/attr…`
    Session,
}

fn fields_of<T: Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn err(req: &Req) -> impl Fn(SsoError) -> Reply + '_ {
    move |e| Reply::error(&req.cid, &e, false)
}

fn unauth_err(req: &Req) -> impl Fn(SsoError) -> Reply + '_ {
    move |e| Reply::error(&req.cid, &e, true)
}

fn secret<T>(req: &Req, name: &str, f: impl Fn(String) -> T) -> Result<Option<T>, Reply> {
    Ok(req.opt_str(name)?.map(f))
}

// ----- 3.1 / 3.2 login and logout --------------------------------------------------------------

fn claimed_addr(req: &Req) -> Result<Option<RemoteAddr>, Reply> {
    match req.fields.get("remote_addr") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(RemoteAddr::parse(s)),
        Some(Value::Array(items)) => {
            let parts: Option<Vec<String>> = items.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            match parts {
                Some(p) => Ok(RemoteAddr::parse(&p.join(","))),
                None => Err(req.bad()),
            }
        }
        Some(_) => Err(req.bad()),
    }
}

pub async fn login(app: App, req: Req) -> Out {
    let username = req.req_str("username")?;
    let password = Password::new(req.req_str("password")?);
    let totp = secret(&req, "totp_code", TotpCode::new)?;
    let new_pw = secret(&req, "new_password", Password::new)?;
    let ua = req.opt_str("user_agent")?;
    let ctx = req.ctx()?.with_claimed(claimed_addr(&req)?, ua.as_deref());
    let s = app
        .sso
        .user()
        .login(&ctx, &username, &password, new_pw.as_ref(), totp.as_ref())
        .await
        .map_err(unauth_err(&req))?;
    let mut m = Map::new();
    m.insert("ust".into(), Value::from(s.ust.expose()));
    m.insert("user_id".into(), Value::from(s.user_id.as_str()));
    m.insert("session_id".into(), Value::from(s.session_id.as_str()));
    m.insert("creation_time".into(), Value::from(s.creation_time.to_zato()));
    m.insert("expiration_time".into(), Value::from(s.expiration_time.to_zato()));
    Ok(if s.has_w_about_to_exp { Reply::warning(&req.cid, Code::W003005, m) } else { Reply::ok(&req.cid, m) })
}

pub async fn logout(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    match app.sso.user().logout(&ctx).await {
        Ok(()) => Ok(Reply::done(&req.cid)),
        Err(e @ SsoError::Validation { code: Code::E007001, .. }) => {
            let _ = e;
            Ok(Reply::done(&req.cid))
        }
        Err(e) => Err(unauth_err(&req)(e)),
    }
}

// ----- 3.3 – 3.6 users --------------------------------------------------------------------------

pub async fn user(app: App, req: Req) -> Out {
    match req.method {
        Method::GET => get_user(app, req).await,
        Method::POST => create_user(app, req).await,
        Method::PATCH => update_user(app, req).await,
        _ => delete_user(app, req).await,
    }
}

async fn get_user(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let view = match req.opt_str("user_id")? {
        Some(id) => app.sso.user().get_user_by_id(&ctx, &id, false).await,
        None => app.sso.user().get_current_user(&ctx, false).await,
    }
    .map_err(err(&req))?;
    Ok(Reply::ok(&req.cid, fields_of(&view)))
}

async fn create_user(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let data = NewUser {
        username: req.opt_str("username")?,
        password: secret(&req, "password", Password::new)?,
        password_must_change: req.opt_bool("password_must_change")?,
        email: req.opt_str("email")?,
        display_name: req.opt_str("display_name")?,
        first_name: req.opt_str("first_name")?,
        middle_name: req.opt_str("middle_name")?,
        last_name: req.opt_str("last_name")?,
        is_locked: req.opt_bool("is_locked")?,
        sign_up_status: req.opt_str("sign_up_status")?,
        is_totp_enabled: req.opt_bool("is_totp_enabled")?,
        totp_key: secret(&req, "totp_key", TotpKeyText::new)?,
        totp_label: req.opt_str("totp_label")?,
    };
    let auto_approve = req.opt_bool("auto_approve")?.unwrap_or(false);
    let view = app.sso.user().create_user(&ctx, data, auto_approve).await.map_err(err(&req))?;
    Ok(Reply::ok(&req.cid, fields_of(&view)))
}

async fn update_user(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let data = UserUpdate {
        username: req.nullable_str("username")?,
        email: req.nullable_str("email")?,
        display_name: req.nullable_str("display_name")?,
        first_name: req.nullable_str("first_name")?,
        middle_name: req.nullable_str("middle_name")?,
        last_name: req.nullable_str("last_name")?,
        is_totp_enabled: req.nullable_bool("is_totp_enabled")?,
        totp_label: req.nullable_str("totp_label")?,
        is_locked: req.nullable_bool("is_locked")?,
        password_expiry: req.nullable_str("password_expiry")?,
        password_must_change: req.nullable_bool("password_must_change")?,
        sign_up_status: req.nullable_str("sign_up_status")?,
        approval_status: req.nullable_str("approval_status")?,
        totp_code: secret(&req, "totp_code", TotpCode::new)?,
    };
    match req.opt_str("user_id")? {
        Some(id) => app.sso.user().update_user_by_id(&ctx, &id, data).await,
        None => app.sso.user().update_current_user(&ctx, data).await,
    }
    .map_err(err(&req))?;
    Ok(Reply::done(&req.cid))
}

async fn delete_user(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let id = req.req_str("user_id")?;
    app.sso.user().delete_user_by_id(&ctx, &id).await.map_err(err(&req))?;
    Ok(Reply::done(&req.cid))
}

// ----- 3.7 / 3.8 sign-up ---------------------------------------------------------------------------

pub async fn signup(app: App, req: Req) -> Out {
    let ctx = req.ctx()?;
    if req.method == Method::PATCH {
        let token = ConfirmToken::new(req.req_str("confirm_token")?);
        app.sso.user().confirm_signup(&ctx, &token).await.map_err(unauth_err(&req))?;
        return Ok(Reply::done(&req.cid));
    }
    let data = SignupCtx {
        username: req.opt_str("username")?.unwrap_or_default(),
        password: Password::new(req.opt_str("password")?.unwrap_or_default()),
        email: req.opt_str("email")?,
        app_list: req.opt_str_list("app_list")?.unwrap_or_default(),
    };
    let token = app.sso.user().signup(&ctx, data).await.map_err(unauth_err(&req))?;
    let mut m = Map::new();
    m.insert("confirm_token".into(), Value::from(token.expose()));
    Ok(Reply::ok(&req.cid, m))
}

// ----- 3.9 approval, 3.10 password, 3.11 search, 3.12 lock --------------------------------------------

pub async fn approve(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let id = req.req_str("user_id")?;
    app.sso.user().approve_user(&ctx, &id).await.map_err(err(&req))?;
    Ok(Reply::done(&req.cid))
}

pub async fn reject(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let id = req.req_str("user_id")?;
    app.sso.user().reject_user(&ctx, &id).await.map_err(err(&req))?;
    Ok(Reply::done(&req.cid))
}

pub async fn change_password(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let data = ChangePassword {
        user_id: req.opt_str("user_id")?,
        old_password: secret(&req, "old_password", Password::new)?,
        new_password: Password::new(req.req_str("new_password")?),
        password_expiry: req.opt_int("password_expiry")?.filter(|d| *d > 0),
        must_change: req.opt_bool("must_change")?,
    };
    app.sso.user().change_password(&ctx, data).await.map_err(err(&req))?;
    Ok(Reply::done(&req.cid))
}

pub async fn search(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let q = SearchCtx {
        user_id: req.opt_str("user_id")?,
        username: req.opt_str("username")?,
        email: req.opt_str("email")?,
        display_name: req.opt_str("display_name")?,
        first_name: req.opt_str("first_name")?,
        middle_name: req.opt_str("middle_name")?,
        last_name: req.opt_str("last_name")?,
        sign_up_status: req.opt_str("sign_up_status")?,
        approval_status: req.opt_str("approval_status")?,
        cur_page: req.opt_int("cur_page")?,
        page_size: req.opt_int("page_size")?,
        name_op: req.opt_str("name_op")?,
        is_name_exact: req.opt_bool("is_name_exact")?,
        paginate: req.opt_bool("paginate")?,
    };
    let r = app.sso.user().search(&ctx, q).await.map_err(err(&req))?;
    Ok(Reply::ok(&req.cid, fields_of(&r)))
}

pub async fn lock(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let id = req.req_str("user_id")?;
    if req.method == Method::POST {
        app.sso.user().lock_user(&ctx, &id).await
    } else {
        app.sso.user().unlock_user(&ctx, &id).await
    }
    .map_err(err(&req))?;
    Ok(Reply::done(&req.cid))
}

// ----- 3.13 – 3.15 TOTP -------------------------------------------------------------------------

pub async fn reset_totp_key(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let user_id = req.opt_str("user_id")?;
    let key = req.opt_str("totp_key")?.map(TotpKeyText::new);
    let label = req.opt_str("totp_label")?;
    let r = app
        .sso
        .user()
        .reset_totp_key_for(&ctx, user_id.as_deref(), key.as_ref().map(|k| k.expose()), label.as_deref())
        .await
        .map_err(err(&req))?;
    let mut m = Map::new();
    if let Some(k) = r {
        m.insert("totp_key".into(), Value::from(k.expose_base32()));
        m.insert("totp_uri".into(), Value::from(k.otpauth_uri()));
    }
    Ok(Reply::ok(&req.cid, m))
}

pub async fn totp_uri(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let u = app.sso.totp().enrolment_uri(&ctx).await.map_err(err(&req))?;
    let mut m = Map::new();
    m.insert("totp_uri".into(), Value::from(u.uri));
    m.insert("totp_qr_svg".into(), Value::from(u.qr_svg));
    Ok(Reply::ok(&req.cid, m))
}

pub async fn totp_validate(app: App, req: Req) -> Out {
    let ust = req.ust("ust")?;
    let ctx = req.ctx()?.with_ust(Ust::new(ust.clone()));
    let code = TotpCode::new(req.req_str("totp_code")?);
    let target = match (req.opt_str("user_id")?, req.opt_str("username")?) {
        (Some(_), Some(_)) => return Err(req.bad()),
        (Some(id), None) => TotpTarget::UserId(id),
        (None, Some(name)) => TotpTarget::Username(name),
        (None, None) => TotpTarget::Ust(Ust::new(ust)),
    };
    app.sso.totp().validate_code(&ctx, Some(&code), target).await.map_err(err(&req))?;
    Ok(Reply::done(&req.cid))
}

// ----- 3.16 linked ---------------------------------------------------------------------------------

pub async fn linked(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    match req.method {
        Method::GET => {
            let list = app
                .sso
                .user()
                .get_linked_auth_list(&ctx, req.opt_str("user_id")?.as_deref())
                .await
                .map_err(err(&req))?;
            let mut m = Map::new();
            m.insert("result".into(), serde_json::to_value(list).unwrap_or(Value::Null));
            Ok(Reply::ok(&req.cid, m))
        }
        Method::POST => {
            let (id, t, u) = (req.req_str("user_id")?, req.req_str("auth_type")?, req.req_str("auth_username")?);
            let active = req.opt_bool("is_active")?.unwrap_or(true);
            let (_, auth_id) = app.sso.user().create_linked_auth(&ctx, &id, &t, &u, active).await.map_err(err(&req))?;
            Ok(Reply::ok(&req.cid, single("auth_id", auth_id.as_str())))
        }
        _ => {
            let (id, t, u) = (req.req_str("user_id")?, req.req_str("auth_type")?, req.req_str("auth_username")?);
            let auth_id = app.sso.user().delete_linked_auth(&ctx, &id, &t, &u).await.map_err(err(&req))?;
            Ok(Reply::ok(&req.cid, single("auth_id", auth_id.as_str())))
        }
    }
}

fn single(k: &str, v: impl Into<Value>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(k.into(), v.into());
    m
}

// ----- 3.17 – 3.19 sessions ------------------------------------------------------------------------

pub async fn session(app: App, req: Req) -> Out {
    match req.method {
        Method::GET => {
            let ctx = req.ctx_with("current_ust")?;
            let target = match (req.opt_str("target_ust")?, req.opt_str("target_session_id")?) {
                (Some(u), None) => SessionRef::Ust(Ust::new(u)),
                (None, Some(id)) => SessionRef::Id(id),
                _ => return Err(req.bad()),
            };
            let v = app.sso.session().get(&ctx, target).await.map_err(err(&req))?;
            Ok(Reply::ok(&req.cid, fields_of(&v)))
        }
        Method::POST => {
            let ctx = req.ctx_with("current_ust")?;
            let target = Ust::new(req.req_str("target_ust")?);
            let valid = app.sso.session().verify(&ctx, &target).await.map_err(err(&req))?;
            Ok(Reply::ok(&req.cid, single("is_valid", valid)))
        }
        Method::PATCH => {
            let ctx = req.ctx_with("ust")?;
            let exp = app.sso.session().renew(&ctx).await.map_err(err(&req))?;
            Ok(Reply::ok(&req.cid, single("expiration_time", exp.to_zato())))
        }
        _ => {
            let ctx = req.ctx_with("ust")?;
            let sid = req.req_str("session_id")?;
            app.sso.session().revoke(&ctx, &sid).await.map_err(err(&req))?;
            Ok(Reply::done(&req.cid))
        }
    }
}

pub async fn session_list(app: App, req: Req) -> Out {
    let target_ust = req.opt_str("target_ust")?;
    let user_id = req.opt_str("user_id")?;
    let named = target_ust.is_some() || user_id.is_some();
    // A Bearer header is `current_ust` when a target is named, else `ust`.
    let (ust, current) = if named {
        (req.opt_str("ust")?, Some(req.ust("current_ust")?))
    } else {
        (Some(req.ust("ust")?), req.opt_str("current_ust")?)
    };
    let (ctx_ust, target) = match (ust, current, target_ust, user_id) {
        (Some(u), None, None, None) => (u, ListTarget::Own),
        (None, Some(c), Some(t), None) => (c, ListTarget::Ust(Ust::new(t))),
        (None, Some(c), None, Some(id)) => (c, ListTarget::User(id)),
        _ => return Err(Reply::error(&req.cid, &SsoError::invalid_input(), false)),
    };
    let ctx = req.ctx()?.with_ust(Ust::new(ctx_ust));
    let list = app.sso.session().get_list(&ctx, target).await.map_err(err(&req))?;
    Ok(Reply::ok(&req.cid, single("result", serde_json::to_value(list).unwrap_or(Value::Null))))
}

pub async fn logout_all(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let user_id = req.opt_str("user_id")?;
    let keep = req.opt_bool("keep_current")?.unwrap_or(false);
    let n = app.sso.session().logout_all(&ctx, user_id.as_deref(), keep).await.map_err(err(&req))?;
    Ok(Reply::ok(&req.cid, single("revoked", n)))
}

// ----- 3.20 / 3.21 attributes ---------------------------------------------------------------------------

fn attr_ctx(req: &Req, scope: Scope) -> Result<(sso_core::CallCtx, AttrTarget), Reply> {
    match scope {
        Scope::User => {
            let ctx = req.ctx_with("ust")?;
            Ok((ctx, AttrTarget::User(req.opt_str("user_id")?)))
        }
        Scope::Session => {
            let ctx = req.ctx_with("current_ust")?;
            let target = match (req.opt_str("target_ust")?, req.opt_str("target_session_id")?) {
                (None, None) => None,
                (Some(u), None) => Some(SessionRef::Ust(Ust::new(u))),
                (None, Some(id)) => Some(SessionRef::Id(id)),
                _ => return Err(req.bad()),
            };
            Ok((ctx, AttrTarget::Session(target)))
        }
    }
}

/// `name` or `data` (not both: 400; neither: `E008003`).
enum Items {
    One(Value),
    Many(Vec<Value>),
}

fn items(req: &Req) -> Result<Items, Reply> {
    match (req.present("name"), req.present("data")) {
        (true, true) => Err(req.bad()),
        (true, false) => Ok(Items::One(Value::Object(req.fields.clone()))),
        (false, true) => match req.fields.get("data") {
            Some(Value::Array(a)) => Ok(Items::Many(a.clone())),
            _ => Err(req.bad()),
        },
        (false, false) => {
            Err(Reply::error(&req.cid, &SsoError::code(Code::E008003, sso_core::Reason::InvalidInput), false))
        }
    }
}

fn target_user_matches(req: &Req, item: &Map<String, Value>) -> Result<(), Reply> {
    if let Some(id) = item.get("user_id").and_then(Value::as_str)
        && req.opt_str("user_id")?.as_deref() != Some(id)
    {
        return Err(Reply::error(&req.cid, &SsoError::invalid_input(), false));
    }
    Ok(())
}

fn attr_input(req: &Req, v: &Value, with_value: bool) -> Result<AttrInput, Reply> {
    let Value::Object(o) = v else {
        return Err(req.bad());
    };
    target_user_matches(req, o)?;
    let name = o.get("name").and_then(Value::as_str).ok_or_else(|| req.bad())?.to_owned();
    let value = if with_value { o.get("value").cloned().ok_or_else(|| req.bad())? } else { Value::Null };
    let expiration = match o.get("expiration") {
        None | Some(Value::Null) => None,
        Some(v) => Some(super::input::as_int(v).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| req.bad())?),
    };
    let encrypt = match o.get("encrypt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(super::input::as_bool(v).ok_or_else(|| req.bad())?),
    };
    Ok(AttrInput { name, value, expiration, encrypt })
}

fn names_of(req: &Req, it: &Items) -> Result<Vec<String>, Reply> {
    match it {
        Items::One(_) => Ok(vec![req.req_str("name")?]),
        Items::Many(list) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| req.bad()),
                _ => Err(req.bad()),
            })
            .collect(),
    }
}

fn attr_json(a: &sso_core::service::views::Attr) -> Value {
    serde_json::to_value(a).unwrap_or(Value::Null)
}

pub async fn attr(app: App, req: Req, scope: Scope) -> Out {
    let (ctx, target) = attr_ctx(&req, scope)?;
    let api = app.sso.attr();
    let it = items(&req)?;
    let e = err(&req);
    match req.method {
        Method::GET => {
            let decrypt = req.opt_bool("decrypt")?.unwrap_or(true);
            match &it {
                Items::One(_) => {
                    let name = req.req_str("name")?;
                    let found = api.get(&ctx, target, &name, decrypt).await.map_err(e)?;
                    let mut m = single("found", found.is_some());
                    if let Some(a) = found
                        && let Value::Object(o) = attr_json(&a)
                    {
                        m.extend(o);
                    }
                    Ok(Reply::ok(&req.cid, m))
                }
                Items::Many(_) => {
                    let names = names_of(&req, &it)?;
                    let map = api.get_many(&ctx, target, &names, decrypt).await.map_err(e)?;
                    let obj: Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect();
                    Ok(Reply::ok(&req.cid, single("result", Value::Object(obj))))
                }
            }
        }
        Method::DELETE => {
            let names = names_of(&req, &it)?;
            match &it {
                Items::One(_) => api.delete(&ctx, target, names.first().map(String::as_str).unwrap_or("")).await,
                Items::Many(_) => api.delete_many(&ctx, target, &names).await,
            }
            .map_err(e)?;
            Ok(Reply::done(&req.cid))
        }
        ref m => {
            let inputs: Vec<AttrInput> = match &it {
                Items::One(v) => vec![attr_input(&req, v, true)?],
                Items::Many(list) => list.iter().map(|v| attr_input(&req, v, true)).collect::<Result<_, _>>()?,
            };
            let one = matches!(it, Items::One(_));
            let r = match (m.clone(), one) {
                (Method::POST, true) => api.create(&ctx, target, first(inputs)?).await,
                (Method::POST, false) => api.create_many(&ctx, target, inputs).await,
                (Method::PUT, true) => api.set(&ctx, target, first(inputs)?).await,
                (Method::PUT, false) => api.set_many(&ctx, target, inputs).await,
                (_, true) => api.update(&ctx, target, first(inputs)?).await,
                (_, false) => api.update_many(&ctx, target, inputs).await,
            };
            r.map_err(e)?;
            Ok(Reply::done(&req.cid))
        }
    }
}

fn first(mut v: Vec<AttrInput>) -> Result<AttrInput, Reply> {
    v.pop().ok_or_else(|| Reply::bad_request(""))
}

pub async fn attr_exists(app: App, req: Req, scope: Scope) -> Out {
    let (ctx, target) = attr_ctx(&req, scope)?;
    let it = items(&req)?;
    let names = names_of(&req, &it)?;
    let result = match it {
        Items::One(_) => Value::from(
            app.sso
                .attr()
                .exists(&ctx, target, names.first().map(String::as_str).unwrap_or(""))
                .await
                .map_err(err(&req))?,
        ),
        Items::Many(_) => {
            serde_json::to_value(app.sso.attr().exists_many(&ctx, target, &names).await.map_err(err(&req))?)
                .unwrap_or(Value::Null)
        }
    };
    Ok(Reply::ok(&req.cid, single("result", result)))
}

pub async fn attr_names(app: App, req: Req, scope: Scope) -> Out {
    let (ctx, target) = attr_ctx(&req, scope)?;
    let names = app.sso.attr().names(&ctx, target).await.map_err(err(&req))?;
    Ok(Reply::ok(&req.cid, single("result", names)))
}

pub async fn attr_expiry(app: App, req: Req, scope: Scope) -> Out {
    let (ctx, target) = attr_ctx(&req, scope)?;
    let it = items(&req)?;
    let exp_of = |o: &Map<String, Value>| -> Result<u64, Reply> {
        o.get("expiration").and_then(super::input::as_int).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| req.bad())
    };
    match it {
        Items::One(Value::Object(o)) => {
            let name = req.req_str("name")?;
            app.sso.attr().set_expiry(&ctx, target, &name, exp_of(&o)?).await.map_err(err(&req))?;
        }
        Items::Many(list) => {
            let mut pairs = Vec::new();
            for v in &list {
                let Value::Object(o) = v else {
                    return Err(req.bad());
                };
                target_user_matches(&req, o)?;
                let name = o.get("name").and_then(Value::as_str).ok_or_else(|| req.bad())?.to_owned();
                pairs.push((name, exp_of(o)?));
            }
            app.sso.attr().set_expiry_many(&ctx, target, &pairs).await.map_err(err(&req))?;
        }
        Items::One(_) => return Err(req.bad()),
    }
    Ok(Reply::done(&req.cid))
}

// ----- 3.22 password reset, 3.23 audit ---------------------------------------------------------------

pub async fn password_reset(app: App, req: Req) -> Out {
    let ctx = req.ctx()?;
    let api = app.sso.password_reset();
    match req.method {
        Method::POST => {
            let credential = req.req_str("credential")?;
            api.create_token(&ctx, &credential).await.map_err(unauth_err(&req))?;
            Ok(Reply::done(&req.cid))
        }
        Method::PATCH => {
            let token = PrtToken::new(req.req_str("token")?);
            let r = api.access_token(&ctx, &token).await.map_err(unauth_err(&req))?;
            Ok(Reply::ok(&req.cid, single("reset_key", r.reset_key.expose())))
        }
        _ => {
            let token = PrtToken::new(req.req_str("token")?);
            let key = ResetKey::new(req.req_str("reset_key")?);
            let pw = Password::new(req.req_str("password")?);
            api.change_password(&ctx, &token, &key, &pw).await.map_err(unauth_err(&req))?;
            Ok(Reply::done(&req.cid))
        }
    }
}

pub async fn audit_query(app: App, req: Req) -> Out {
    let ctx = req.ctx_with("ust")?;
    let ts = |name: &str| -> Result<Option<Timestamp>, Reply> {
        match req.opt_str(name)? {
            None => Ok(None),
            Some(s) => Timestamp::parse(&s).map(Some).ok_or_else(|| req.bad()),
        }
    };
    let outcome = match req.opt_str("outcome")? {
        None => None,
        Some(o) => Some(Outcome::parse(&o).ok_or_else(|| req.bad())?),
    };
    let q = AuditQuery {
        cid: req.opt_str("cid")?,
        user_id: req.opt_str("user_id")?,
        op: req.opt_str("op")?,
        outcome,
        since: ts("since")?,
        until: ts("until")?,
        limit: u32::try_from(req.opt_int("limit")?.unwrap_or(100)).map_err(|_| req.bad())?,
        before: req.opt_str("before")?,
    };
    let page = app.sso.audit().query(&ctx, q).await.map_err(err(&req))?;
    let mut m = Map::new();
    m.insert("result".into(), json!(page.records));
    m.insert("next_before".into(), json!(page.next_before));
    Ok(Reply::ok(&req.cid, m))
}

//! Property tests: arbitrary byte strings given as UST, user id, TOTP code or key never panic and
//! never authenticate (issue "Must show"; security.md item 85).

use proptest::prelude::*;
use sso_core::SsoError;
use sso_core::ids::UserId;
use sso_core::secret::{Password, TotpCode, TotpKey, Ust};
use sso_core::service::UserUpdate;
use sso_core::testing::Fixture;

struct World {
    rt: tokio::runtime::Runtime,
    f: Fixture,
    alice: UserId,
    alice_ust: Ust,
    su_ust: Ust,
    key: TotpKey,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (f, alice, alice_ust, su_ust, key) = rt.block_on(async {
        let f = Fixture::with(sso_core::memory::stores(), |c| c.throttle.enabled = false).await;
        let (_su, su_ust) = f.user_with_session("root-admin", true).await;
        let alice = f.create_user("alice", false).await;
        let key = TotpKey::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        f.sso.user().reset_totp_key(&f.operator(), Some(&alice), Some(key.expose_base32()), None).await.unwrap();
        let upd = UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
        f.sso.user().update_user_by_id(&f.operator(), alice.as_str(), upd).await.unwrap();
        // An Operator reset is an admin reset: it revokes alice's sessions, so log in afterwards.
        let code = f.code_now(&key, 0);
        let alice_ust = f.login("alice", Some(&code)).await.unwrap().ust;
        (f, alice, alice_ust, su_ust, key)
    });
    World { rt, f, alice, alice_ust, su_ust, key }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_usts_never_authenticate(bytes in proptest::collection::vec(any::<u8>(), 0..96), prefixed in any::<bool>()) {
        let w = world();
        let s = if prefixed { format!("zust{}", text(&bytes)) } else { text(&bytes) };
        let ctx = w.f.as_user(&Ust::new(s.clone()));
        w.rt.block_on(async {
            let r = w.f.sso.user().get_current_user(&ctx, true).await;
            prop_assert_eq!(r.unwrap_err().real_code(), sso_core::Code::E007001);
            let r = w.f.sso.session().verify(&w.f.as_user(&w.su_ust), &Ust::new(s)).await;
            prop_assert_eq!(r.unwrap(), false);
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_user_ids_never_reach_another_user(bytes in proptest::collection::vec(any::<u8>(), 0..64), prefixed in any::<bool>()) {
        let w = world();
        let s = if prefixed { format!("zusr{}", text(&bytes)) } else { text(&bytes) };
        prop_assume!(s != w.alice.as_str() && !s.is_empty());
        w.rt.block_on(async {
            // A regular user naming any other id: E008002, nothing else.
            let r = w.f.sso.user().reset_totp_key_for(&w.f.as_user(&w.alice_ust), Some(&s), None, None).await;
            prop_assert_eq!(r.unwrap_err().real_code(), sso_core::Code::E008002);
            let r = w.f.sso.user().get_user_by_id(&w.f.as_user(&w.alice_ust), &s, true).await;
            prop_assert_eq!(r.unwrap_err().real_code(), sso_core::Code::E005001);
            // A super-user naming an id nobody has: E005001.
            let r = w.f.sso.user().reset_totp_key_for(&w.f.as_user(&w.su_ust), Some(&s), None, None).await;
            prop_assert_eq!(r.unwrap_err().real_code(), sso_core::Code::E005001);
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_totp_codes_never_log_in(bytes in proptest::collection::vec(any::<u8>(), 0..16), digits in "[0-9]{6}") {
        let w = world();
        let good = w.f.code_now(&w.key, 0);
        let prev = w.f.code_now(&w.key, -1);
        w.rt.block_on(async {
            for c in [text(&bytes), digits.clone()] {
                if c == good || c == prev {
                    continue;
                }
                let r = w.f.sso.user().login(&w.f.anon(), "alice", &Password::new(sso_core::testing::PASSWORD), None, Some(&TotpCode::new(c))).await;
                let e = r.unwrap_err();
                prop_assert!(matches!(e, SsoError::Validation { .. }), "{:?}", e);
            }
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_keys_are_validated_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..160), b32 in "[A-Za-z2-7=]{0,140}") {
        let w = world();
        w.rt.block_on(async {
            for k in [text(&bytes), b32.clone()] {
                let r = w.f.sso.user().reset_totp_key(&w.f.as_user(&w.alice_ust), None, Some(&k), None).await;
                match r {
                    Ok(returned) => {
                        prop_assert!(returned.is_none() || k.is_empty());
                        if !k.is_empty() {
                            let parsed = TotpKey::parse(&k);
                            prop_assert!(parsed.is_ok(), "accepted an invalid key");
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(e.real_code(), sso_core::Code::E008002);
                        prop_assert!(TotpKey::parse(&k).is_err());
                    }
                }
            }
            Ok(())
        })?;
    }
}

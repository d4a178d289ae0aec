/**
 * Turns a request's credentials into an identity, or a 401 refusal. API keys
 * are looked up by digest; bearer values that look like JWTs are checked as
 * Butler's own user tokens or as OIDC tokens, as the auth mode allows. Any
 * error fails closed.
 *
 * @module
 */

import { decodeProtectedHeader } from "jose";
import {
  modeAccepts,
  type Policy,
  type SubjectPolicy,
} from "../config/policy.ts";
import { type Refusal, refuse } from "../errors/refusal.ts";
import type { Identity, Subject } from "./identity.ts";
import { type ApiKeyIndex, presentedCredential } from "./api_keys.ts";
import { verifyUserToken } from "./jwt_local.ts";
import { looksLikeJwt, type OidcVerifier } from "./oidc.ts";
import { policyForRoles } from "./roles.ts";

/** What authentication needs besides the policy. */
export interface AuthContext {
  readonly policy: Policy;
  readonly keys: ApiKeyIndex;
  readonly oidc?: OidcVerifier;
}

/** The header a service sends a person's token in. */
export const USER_TOKEN_HEADER = "x-butler-user-token";

function unauthorized(reason: string, message = "unauthorized"): Refusal {
  return refuse(401, reason, message, {
    headers: { "www-authenticate": 'Bearer realm="butler"' },
  });
}

const usesKeys = (policy: Policy) => modeAccepts(policy.auth.mode).keys;
const usesLocalJwt = (policy: Policy) =>
  policy.auth.jwtSecret !== undefined &&
  modeAccepts(policy.auth.mode).localUsers;
const usesOidc = (policy: Policy) =>
  policy.auth.oidc !== undefined && modeAccepts(policy.auth.mode).oidc;

/**
 * Authenticates `headers` under `context`. Returns the identity with every
 * policy the request must pass, or a 401 refusal.
 */
export async function authenticate(
  headers: Headers,
  context: AuthContext,
): Promise<Identity | Refusal> {
  const credential = presentedCredential(headers);
  if ("error" in credential) return unauthorized(credential.error);
  if ("none" in credential) return unauthorized("no_credentials");
  const { policy } = context;

  // 1. An API key: a client, possibly acting for a person.
  if (usesKeys(policy)) {
    const client = await context.keys.lookup(credential.value);
    if (client !== undefined) {
      const subjects: Subject[] = [{
        key: `client:${client.name}`,
        policy: client,
      }];
      if (!client.requireUserAuth) {
        return { auth: "api_key", client, subjects };
      }
      const token = headers.get(USER_TOKEN_HEADER);
      if (token === null) {
        return unauthorized(
          "user_token_missing",
          `this client must also send a user token in ${USER_TOKEN_HEADER}`,
        );
      }
      const person = await verifyPersonToken(token, context);
      if ("status" in person) return person;
      return {
        auth: person.auth,
        client,
        user: person.user,
        subjects: [...subjects, person.subject],
      };
    }
  }

  // 2. A person's token presented directly.
  if (looksLikeJwt(credential.value)) {
    const person = await verifyPersonToken(credential.value, context);
    if ("status" in person) return person;
    return { auth: person.auth, user: person.user, subjects: [person.subject] };
  }
  return unauthorized("unknown_key");
}

interface Person {
  readonly auth: "jwt" | "oidc";
  readonly user: string;
  readonly subject: Subject;
}

async function verifyPersonToken(
  token: string,
  context: AuthContext,
): Promise<Person | Refusal> {
  const { policy } = context;
  if (!looksLikeJwt(token)) return unauthorized("malformed_token");
  let reason = "token_not_accepted";

  if (usesLocalJwt(policy)) {
    const local = await verifyUserToken(token, {
      secret: policy.auth.jwtSecret!,
      users: policy.users,
    });
    if ("user" in local) {
      const override = policy.userOverrides.get(local.user.name);
      return person("jwt", local.user.name, override ?? local.user);
    }
    reason = local.reason;
    // Butler signs its own tokens with HS256, which OIDC never accepts: an
    // HS256 token was meant for the local verifier, so its reason (expired,
    // user removed, …) is the one to report, not OIDC's algorithm refusal.
    if (headerAlgorithm(token) === LOCAL_TOKEN_ALGORITHM) {
      return unauthorized(reason);
    }
  }

  if (usesOidc(policy) && context.oidc !== undefined) {
    const federated = await context.oidc.verify(token);
    if ("reason" in federated) {
      return unauthorized(
        federated.reason,
        federated.reason === "oidc_unavailable"
          ? "identity provider keys are not available yet; try again later"
          : "unauthorized",
      );
    }
    const merged = policyForRoles(federated.roles, {
      rolePolicies: policy.rolePolicies,
      userOverrides: policy.userOverrides,
      username: federated.username,
    });
    if (merged === undefined) {
      // The person is known, only not allowed: logs and metrics name them.
      return refuse(
        403,
        "no_matching_role",
        "no role of this user is allowed",
        {
          detail: { user: federated.username, auth: "oidc" },
        },
      );
    }
    return person("oidc", federated.username, merged);
  }
  return unauthorized(reason);
}

/** The algorithm of tokens Butler issues (see `jwt_local.ts`). */
const LOCAL_TOKEN_ALGORITHM = "HS256";

/** The `alg` of a token's protected header; undefined when unreadable. */
function headerAlgorithm(token: string): string | undefined {
  try {
    return decodeProtectedHeader(token).alg;
  } catch {
    return undefined;
  }
}

function person(
  auth: "jwt" | "oidc",
  user: string,
  policy: SubjectPolicy,
): Person {
  // A provider's username and a config user's name are separate namespaces:
  // someone who picks "alice" at the provider must not share the local
  // alice's limits, slots and budget.
  const key = auth === "oidc" ? `oidc:${user}` : `user:${user}`;
  return { auth, user, subject: { key, policy } };
}

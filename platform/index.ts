/**
 * The floor's public surface: what service modules and scripts import.
 * Everything else under platform/ is internal and may change without notice;
 * like connect-es's index, this file is the contract.
 */

// What a module is and how a process runs modules.
export type { ServiceContext, ServiceModule, ServiceParts, RouteDeclaration } from "./service.js";
export { MODULE_NAME, declarationProblems } from "./declarations.js";
export { serviceUrlVariable } from "./service-urls.js";
export { startProcess, exitOnSignals, type RunningProcess } from "./process.js";
export { readPlatformSettings, platformVars, type PlatformSettings } from "./settings.js";
export type { ReadinessProbe } from "./server.js";

// RPCs and plain HTTP.
export { register, rpcPath, returnsStream, type ServiceRegistration, type Middleware, type RpcCall, type RpcHandler } from "./rpc/pipeline.js";
export { encodedResponse } from "./rpc/encoded.js";
export { sendJson, readBody, type HttpRoute, type UpgradeRoute } from "./http-routes.js";
export { findViolation, rulesOf } from "./middleware/validate.js";
export { createServiceClient, createServiceTransport } from "./client.js";

// Configuration and logs.
export { describeDefault, env, int, str, url, list, oneOf, bool, readConfig, ConfigError, type ConfigOf, type EnvVar, type EnvParser } from "./config.js";
export { createLogger, type Logger } from "./log.js";
export type { PlatformMetrics } from "./metrics.js";
export { currentRequest } from "./request-context.js";

// Ids: the one rule for ids that name users, instances, subjects and keys.
export { ID_PATTERN, ID_RULE, isId } from "./ids.js";
export { randomBase64url } from "./random.js";

// Who is calling.
export { principalKey, principalOf, type Principal } from "./auth/principal.js";
export { ACCESS_TOKEN_ALG, ACCESS_TOKEN_TYP, MAX_ACCESS_TOKEN_TTL_S, SERVICE_ROLE, TIERS, tierClaim, tierFromClaim, type TierInfo } from "./auth/claims.js";
export { parseBearer } from "./auth/bearer.js";
export { bearerToken, accessOf } from "./auth/token-check.js";
export { clientAddress } from "./auth/client-address.js";
export { createAccessTokenVerifier, type AccessTokenVerifier } from "./auth/verifier.js";
export { createRemoteKeys } from "./auth/remote-keys.js";
export { createProcessAuth, type ProcessAuth } from "./auth/process-auth.js";

// PostgreSQL.
export type { Database, Sql, TransactionSql } from "./db/types.js";
export { createDatabase, afterCommit } from "./db/database.js";
export { migrate } from "./db/migrate.js";

// Events and NATS.
export type { Events, EventMeta, ConsumerOptions } from "./events/types.js";
export { eventSubject } from "./events/subject.js";
export { publishDirectEvent } from "./events/direct.js";
export { isNatsConnected, requireNats } from "./nats/connection.js";
export type { StreamDeclarer, StreamDeclaration } from "./nats/declare.js";
export { subjectToken, encodeSubjectToken, decodeSubjectToken, isSubjectToken } from "./nats/subject.js";

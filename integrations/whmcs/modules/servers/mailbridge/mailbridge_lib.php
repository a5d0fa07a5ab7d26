<?php
/**
 * mailbridge for WHMCS: the transport to the mail bridge.
 *
 * Builds the envelope of docs/design.md#whmcs-envelope, signs it with Standard Webhooks v1
 * (webhook-id, webhook-timestamp, webhook-signature "v1,<base64 HMAC-SHA256>") and turns the
 * bridge's answer into WHMCS's "success" or a readable error. Needs only PHP's curl and json
 * extensions (PHP 7.4 to 8.x). Nothing here calls WHMCS itself.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

if (!class_exists('MailBridgeConfigError')) {

    /** The server entry (Setup > Products/Services > Servers) cannot reach a bridge as set. */
    class MailBridgeConfigError extends RuntimeException
    {
    }

    /** One mail bridge as configured on a WHMCS server entry. */
    final class MailBridgeClient
    {
        const VERSION = '1.0.0';
        const CONNECT_TIMEOUT_S = 5;
        /** The bridge answers within its inline timeout (20 s by default). */
        const TIMEOUT_S = 25;
        /** Status checks and client-area look-ups: a page should not hang on them. */
        const READ_TIMEOUT_S = 15;
        /** Services per usage page (the endpoint takes 1 to 500), and a bound on the pages. */
        const USAGE_PAGE = 500;
        const USAGE_MAX_PAGES = 1000;
        /** Service properties the module keeps (WHMCS stores them as custom fields). */
        const PROP_LAST_CALL = 'mailbridge_last_call';
        const PROP_OWNER = 'mailbridge_owner';
        const INTERNAL_FIELDS = ['mailbridge_last_call', 'mailbridge_owner'];
        /** Module functions whose $params['password'] is sent (everything else drops it). */
        const SENDS_PASSWORD = ['CreateAccount', 'ChangePassword'];
        /** $params keys that must reach the bridge as JSON objects even when empty. */
        const OBJECT_KEYS = ['clientsdetails', 'configoptions', 'customfields'];
        /**
         * The client details the bridge uses (recovery e-mail, display name); nothing else of
         * the client (address, phone numbers, tax id, ...) leaves WHMCS.
         */
        const CLIENT_FIELDS = ['email', 'firstname', 'lastname', 'companyname'];
        /** The mail server's password policy: this many characters, upper, lower and a digit. */
        const PASSWORD_MIN_LENGTH = 12;
        /** What staff and clients read when a new password breaks that policy. */
        const PASSWORD_RULE = 'The new password must be at least 12 characters and contain an '
            . 'upper-case letter, a lower-case letter and a digit.';
        /** Length of a password the module generates when WHMCS's own breaks the policy. */
        const GENERATED_PASSWORD_LENGTH = 16;
        /** Letters and digits that cannot be mistaken for one another (no I, O, l, o, 0, 1). */
        const PASSWORD_UPPER = 'ABCDEFGHJKLMNPQRSTUVWXYZ';
        const PASSWORD_LOWER = 'abcdefghijkmnpqrstuvwxyz';
        const PASSWORD_DIGITS = '23456789';

        /** @var string */
        private $baseUrl;
        /** @var string */
        private $source;
        /** @var string */
        private $secret;
        /** @var string */
        private $key;

        private function __construct(string $baseUrl, string $source, string $secret, string $key)
        {
            $this->baseUrl = $baseUrl;
            $this->source = $source;
            $this->secret = $secret;
            $this->key = $key;
        }

        /**
         * The bridge named by a server entry: host name (optionally with a path prefix), the
         * "Secure" tick for https, an optional port, the username field as the bridge's source
         * name (default "whmcs") and the password or access hash field as the whsec_ secret.
         *
         * @throws MailBridgeConfigError
         */
        public static function fromParams(array $params): self
        {
            $host = trim((string) ($params['serverhostname'] ?? ''));
            if ($host === '') {
                $host = trim((string) ($params['serverip'] ?? ''));
            }
            if ($host === '') {
                throw new MailBridgeConfigError(
                    'no mail bridge host name: set it on the server entry (Setup > Products/Services > Servers)'
                );
            }
            $secure = self::truthy($params['serversecure'] ?? false);
            if (preg_match('#^(https?)://#i', $host, $m)) {
                $secure = $secure || strtolower($m[1]) === 'https';
                $host = substr($host, strlen($m[0]));
            }
            $path = '';
            $slash = strpos($host, '/');
            if ($slash !== false) {
                $path = rtrim(substr($host, $slash), '/');
                $host = substr($host, 0, $slash);
            }
            $port = (int) ($params['serverport'] ?? 0);
            $bareHost = strtolower(preg_replace('/:\d+$/', '', $host));
            if (!$secure && !in_array($bareHost, ['127.0.0.1', 'localhost', '[::1]'], true)) {
                throw new MailBridgeConfigError(
                    'tick "Secure" (HTTPS) on the server entry: the mail bridge is reached over '
                    . 'HTTPS only (plain HTTP is allowed for 127.0.0.1 and localhost)'
                );
            }
            if ($port > 0 && strpos($host, ']') === false && strpos($host, ':') === false) {
                $host .= ':' . $port;
            } elseif ($port > 0 && substr($host, -1) === ']') {
                $host .= ':' . $port;
            }
            $source = trim((string) ($params['serverusername'] ?? ''));
            if ($source === '') {
                $source = 'whmcs';
            }
            if (!preg_match('/^[a-z0-9][a-z0-9_-]*$/', $source)) {
                throw new MailBridgeConfigError(
                    'the server entry\'s Username must be the bridge\'s source name (e.g. whmcs)'
                );
            }
            $secret = '';
            foreach (['serverpassword', 'serveraccesshash'] as $field) {
                $value = trim((string) ($params[$field] ?? ''));
                if (strpos($value, 'whsec_') === 0) {
                    $secret = $value;
                    break;
                }
            }
            $key = $secret === '' ? false : base64_decode(substr($secret, 6), true);
            if ($key === false || strlen($key) < 24) {
                throw new MailBridgeConfigError(
                    'the server entry\'s Password (or Access Hash) must hold the bridge\'s '
                    . 'whsec_ secret from its config (sources.' . $source . '.secrets)'
                );
            }
            $scheme = $secure ? 'https' : 'http';
            return new self($scheme . '://' . $host . $path, $source, $secret, $key);
        }

        public static function truthy($value): bool
        {
            if (is_string($value)) {
                return !in_array(strtolower(trim($value)), ['', '0', 'off', 'no', 'false'], true);
            }
            return (bool) $value;
        }

        public function source(): string
        {
            return $this->source;
        }

        public function baseUrl(): string
        {
            return $this->baseUrl;
        }

        /** Values WHMCS must mask in its module log: the secret and its key. */
        public function secrets(): array
        {
            return [$this->secret, substr($this->secret, 6)];
        }

        /** A keyed digest (the stored "params hash" cannot be used to guess a password). */
        public function digest(string $text): string
        {
            return hash_hmac('sha256', $text, $this->key);
        }

        public static function newWebhookId(): string
        {
            return 'msg_' . bin2hex(random_bytes(16));
        }

        /** ISO 8601 UTC with microseconds, e.g. 2025-03-04T10:15:02.123456+00:00. */
        public static function nowIso(): string
        {
            $now = new DateTime('now', new DateTimeZone('UTC'));
            return $now->format('Y-m-d\TH:i:s.uP');
        }

        /**
         * $params as the bridge receives them: no server* key, no model, no object, our own
         * bookkeeping fields out of customfields, of the client's details only the e-mail and
         * name (CLIENT_FIELDS), and the password only where it is the point.
         */
        public static function paramsToSend(string $function, array $params): array
        {
            $out = [];
            foreach ($params as $key => $value) {
                $key = (string) $key;
                if (strpos($key, 'server') === 0 || $key === 'model') {
                    continue;
                }
                if ($key === 'password' && !in_array($function, self::SENDS_PASSWORD, true)) {
                    continue;
                }
                $clean = self::plain($value);
                if ($clean === null && (is_object($value) || is_resource($value))) {
                    continue;
                }
                $out[$key] = $clean;
            }
            if (isset($out['clientsdetails']) && is_array($out['clientsdetails'])) {
                $out['clientsdetails'] = self::clientFields($out['clientsdetails']);
            }
            if (isset($out['customfields']) && is_array($out['customfields'])) {
                foreach (array_keys($out['customfields']) as $name) {
                    $bare = trim(explode('|', (string) $name, 2)[0]);
                    if (in_array($bare, self::INTERNAL_FIELDS, true)) {
                        unset($out['customfields'][$name]);
                    }
                }
            }
            foreach (self::OBJECT_KEYS as $key) {
                if (!isset($out[$key]) || !is_array($out[$key])) {
                    $out[$key] = [];
                }
            }
            return $out;
        }

        /** Only the client details the bridge uses (CLIENT_FIELDS), those WHMCS passed. */
        public static function clientFields(array $details): array
        {
            $out = [];
            foreach (self::CLIENT_FIELDS as $field) {
                if (array_key_exists($field, $details) && (is_scalar($details[$field]) || $details[$field] === null)) {
                    $out[$field] = $details[$field];
                }
            }
            return $out;
        }

        /**
         * True when the mail server would accept the password: at least 12 characters with an
         * upper-case letter, a lower-case letter and a digit (the bridge checks the same rules).
         * A value that is not UTF-8 text never passes.
         */
        public static function passwordMeetsPolicy($password): bool
        {
            if (!is_string($password) || $password === '' || preg_match('//u', $password) !== 1) {
                return false;
            }
            $length = function_exists('mb_strlen')
                ? mb_strlen($password, 'UTF-8')
                : preg_match_all('/./us', $password);
            return $length >= self::PASSWORD_MIN_LENGTH
                && preg_match('/\p{Lu}/u', $password) === 1
                && preg_match('/\p{Ll}/u', $password) === 1
                && preg_match('/\p{Nd}/u', $password) === 1;
        }

        /**
         * A 16-character password that meets the policy: random_int() over letters and digits
         * that are hard to confuse, with at least one upper-case letter, one lower-case letter
         * and one digit, in random positions.
         */
        public static function generatePassword(): string
        {
            $classes = [self::PASSWORD_UPPER, self::PASSWORD_LOWER, self::PASSWORD_DIGITS];
            $all = implode('', $classes);
            $chars = [];
            foreach ($classes as $class) {
                $chars[] = $class[random_int(0, strlen($class) - 1)];
            }
            while (count($chars) < self::GENERATED_PASSWORD_LENGTH) {
                $chars[] = $all[random_int(0, strlen($all) - 1)];
            }
            for ($i = count($chars) - 1; $i > 0; $i--) { // Fisher-Yates with random_int
                $j = random_int(0, $i);
                [$chars[$i], $chars[$j]] = [$chars[$j], $chars[$i]];
            }
            return implode('', $chars);
        }

        /** Scalars and arrays only: objects and resources become null (and are dropped). */
        private static function plain($value)
        {
            if (is_array($value)) {
                $out = [];
                foreach ($value as $k => $v) {
                    if (is_object($v) || is_resource($v)) {
                        continue;
                    }
                    $out[$k] = self::plain($v);
                }
                return $out;
            }
            if (is_object($value) || is_resource($value)) {
                return null;
            }
            return $value;
        }

        /**
         * Deterministic JSON: keys of every map sorted, the same bytes for the same data, so a
         * retry with the same webhook-id carries a byte-identical body. Maps named in
         * OBJECT_KEYS stay JSON objects when empty.
         */
        public static function canonicalJson($value): string
        {
            $json = json_encode(
                self::canonical($value, ''),
                JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE
            );
            if ($json === false) {
                throw new MailBridgeConfigError('the request could not be encoded as JSON: ' . json_last_error_msg());
            }
            return $json;
        }

        private static function canonical($value, string $key)
        {
            if (!is_array($value)) {
                return $value;
            }
            $isList = $value === [] || array_keys($value) === range(0, count($value) - 1);
            if ($isList && !in_array($key, self::OBJECT_KEYS, true)) {
                return array_map(function ($v) {
                    return self::canonical($v, '');
                }, $value);
            }
            $out = [];
            foreach ($value as $k => $v) {
                $out[(string) $k] = self::canonical($v, (string) $k);
            }
            ksort($out, SORT_STRING);
            return (object) $out;
        }

        /** The Standard Webhooks v1 signature header value. */
        public function signature(string $webhookId, int $timestamp, string $body): string
        {
            $mac = hash_hmac('sha256', $webhookId . '.' . $timestamp . '.' . $body, $this->key, true);
            return 'v1,' . base64_encode($mac);
        }

        /** Every curl option of one request (kept apart so the TLS settings can be checked). */
        public function curlOptions(
            string $path,
            string $body,
            string $webhookId,
            int $timestamp,
            int $timeout = self::TIMEOUT_S,
            string $method = 'POST'
        ): array {
            $headers = [
                'Content-Type: application/json',
                'Accept: application/json',
                'Expect:',
                'webhook-id: ' . $webhookId,
                'webhook-timestamp: ' . $timestamp,
                'webhook-signature: ' . $this->signature($webhookId, $timestamp, $body),
            ];
            $options = [
                CURLOPT_URL => $this->baseUrl . $path,
                CURLOPT_HTTPHEADER => $headers,
                CURLOPT_RETURNTRANSFER => true,
                CURLOPT_HEADER => false,
                CURLOPT_FOLLOWLOCATION => false,
                CURLOPT_SSL_VERIFYPEER => true,
                CURLOPT_SSL_VERIFYHOST => 2,
                CURLOPT_CONNECTTIMEOUT => self::CONNECT_TIMEOUT_S,
                CURLOPT_TIMEOUT => $timeout,
                CURLOPT_USERAGENT => 'mailbridge-whmcs/' . self::VERSION,
            ];
            if ($method === 'GET') {
                $options[CURLOPT_HTTPGET] = true; // signed over the empty body
            } else {
                $options[CURLOPT_POST] = true;
                $options[CURLOPT_POSTFIELDS] = $body;
            }
            if (defined('CURLOPT_PROTOCOLS') && defined('CURLPROTO_HTTPS')) {
                $options[CURLOPT_PROTOCOLS] = CURLPROTO_HTTPS | CURLPROTO_HTTP;
            }
            return $options;
        }

        /**
         * A signed GET of a connector endpoint (`/hooks/<source>/tiers`, `/usage`): the
         * signature covers the empty body, like any other delivery. Same answer shape as post().
         */
        public function get(string $path, array $query = [], int $timeout = self::READ_TIMEOUT_S): array
        {
            $suffix = $query ? '?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986) : '';
            return $this->send($path . $suffix, '', self::newWebhookId(), $timeout, 'GET');
        }

        /**
         * The bridge's tiers and add-ons: ['tiers' => [key => row], 'addons' => [...]], where a
         * row is the endpoint's {key, label, bundle}.
         *
         * @throws MailBridgeConfigError with a sentence staff can act on
         */
        public function tiers(): array
        {
            $response = $this->get('/hooks/' . $this->source . '/tiers');
            $json = $response['json'];
            if ($response['http'] !== 200 || !is_array($json) || !is_array($json['tiers'] ?? null)) {
                throw new MailBridgeConfigError('the tiers could not be read: ' . self::readError($response));
            }
            $tiers = [];
            foreach ($json['tiers'] as $tier) {
                if (is_array($tier) && isset($tier['key']) && is_scalar($tier['key']) && (string) $tier['key'] !== '') {
                    $tiers[(string) $tier['key']] = $tier;
                }
            }
            return ['tiers' => $tiers, 'addons' => is_array($json['addons'] ?? null) ? $json['addons'] : []];
        }

        /**
         * Every service the bridge reports usage for, page by page (`after` = the last service
         * id of the previous page), handed to $each one at a time. Returns the number seen.
         *
         * @throws MailBridgeConfigError when a page cannot be read
         */
        public function eachUsage(callable $each, int $pageSize = self::USAGE_PAGE): int
        {
            $after = '';
            $seen = 0;
            for ($page = 0; $page < self::USAGE_MAX_PAGES; $page++) {
                $query = ['limit' => $pageSize];
                if ($after !== '') {
                    $query['after'] = $after;
                }
                $response = $this->get('/hooks/' . $this->source . '/usage', $query);
                $json = $response['json'];
                if ($response['http'] !== 200 || !is_array($json) || !is_array($json['services'] ?? null)) {
                    throw new MailBridgeConfigError('the usage could not be read: ' . self::readError($response));
                }
                foreach ($json['services'] as $service) {
                    if (is_array($service) && isset($service['service_id'])) {
                        $seen++;
                        $each($service);
                    }
                }
                $next = $json['next'] ?? null;
                if (!is_scalar($next) || (string) $next === '' || (string) $next === $after) {
                    return $seen;
                }
                $after = (string) $next;
            }
            return $seen;
        }

        /** Why a read (GET) did not give what was asked, in one sentence. */
        public static function readError(array $response): string
        {
            if ($response['http'] === 0) {
                return self::transportError($response);
            }
            $error = is_array($response['json']) ? (string) ($response['json']['error'] ?? '') : '';
            if (in_array($error, ['not_found', 'method_not_allowed'], true)) {
                return 'this bridge does not offer ' . strtok($response['url'], '?') . ' (HTTP '
                    . $response['http'] . '): upgrade the bridge';
            }
            if ($response['http'] === 200) {
                return 'the bridge answered HTTP 200 without the expected JSON';
            }
            return self::httpError($response);
        }

        /**
         * POST a signed body. Returns url, http (0 when nothing came back), raw, json (the
         * decoded object or null), curl_errno, curl_error.
         */
        public function post(string $path, string $body, string $webhookId, int $timeout = self::TIMEOUT_S): array
        {
            return $this->send($path, $body, $webhookId, $timeout, 'POST');
        }

        private function send(string $path, string $body, string $webhookId, int $timeout, string $method): array
        {
            $timestamp = time();
            $options = $this->curlOptions($path, $body, $webhookId, $timestamp, $timeout, $method);
            $ch = curl_init();
            curl_setopt_array($ch, $options);
            $raw = curl_exec($ch);
            $errno = curl_errno($ch);
            $error = curl_error($ch);
            $http = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
            curl_close($ch);
            $raw = is_string($raw) ? $raw : '';
            $json = json_decode($raw, true);
            return [
                'url' => $options[CURLOPT_URL],
                'http' => $errno ? 0 : $http,
                'raw' => $raw,
                'json' => is_array($json) ? $json : null,
                'curl_errno' => $errno,
                'curl_error' => $error,
            ];
        }

        /**
         * The bridge's answer to a lifecycle event as [ok, message]: ok only for HTTP 200 with
         * status "applied"; everything else is a sentence staff can act on.
         */
        public static function outcome(array $response): array
        {
            $json = $response['json'];
            $http = $response['http'];
            if ($http === 0) {
                return [false, self::transportError($response)];
            }
            if (!is_array($json)) {
                return [false, self::nonJson($response)];
            }
            $status = (string) ($json['status'] ?? '');
            $reason = (string) ($json['reason'] ?? '');
            $message = (string) ($json['message'] ?? '');
            if ($http === 200 && $status === 'applied') {
                return [true, 'success'];
            }
            if ($http === 202 || $status === 'queued') {
                $when = isset($json['next_attempt_at']) ? ', next attempt ' . $json['next_attempt_at'] : '';
                return [false, 'Queued on the mail bridge (' . ($reason !== '' ? $reason : 'busy') . $when
                    . '): will apply shortly; retry from the Module Queue if it does not'];
            }
            if ($http === 200 && $status === 'failed') {
                return [false, 'Mail bridge: ' . ($reason !== '' ? $reason : 'failed') . ': '
                    . ($message !== '' ? $message : 'no message') . self::eventRef($json)];
            }
            if ($http === 200 && $status === 'superseded') {
                return [false, 'Mail bridge: superseded: a newer event for this service was already '
                    . 'applied, so this one changed nothing; mark it resolved' . self::eventRef($json)];
            }
            if ($http === 200 && $status !== '') {
                return [false, 'Mail bridge: ' . $status . ($message !== '' ? ': ' . $message : '')
                    . self::eventRef($json)];
            }
            return [false, self::httpError($response)];
        }

        private static function eventRef(array $json): string
        {
            return isset($json['event_id']) ? ' (bridge event ' . $json['event_id'] . ')' : '';
        }

        public static function transportError(array $response): string
        {
            $errno = (int) $response['curl_errno'];
            $hint = '';
            if (in_array($errno, [35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91], true)) {
                $hint = ' (the bridge\'s TLS certificate could not be verified; it must be valid for '
                    . 'the host name on the server entry)';
            } elseif (in_array($errno, [28], true)) {
                $hint = ' (no answer in time; the bridge may still apply it: retry from the Module Queue)';
            } elseif (in_array($errno, [6, 7], true)) {
                $hint = ' (check the host name, port and "Secure" on the server entry)';
            }
            return 'Mail bridge unreachable at ' . $response['url'] . ': ' . $response['curl_error']
                . ' (curl error ' . $errno . ')' . $hint;
        }

        private static function nonJson(array $response): string
        {
            $text = trim(preg_replace('/\s+/', ' ', strip_tags($response['raw'])));
            if (strlen($text) > 160) {
                $text = substr($text, 0, 160) . '...';
            }
            return 'Mail bridge answered HTTP ' . $response['http'] . ' without JSON (a proxy or '
                . 'gateway in front of it?)' . ($text !== '' ? ': ' . $text : '');
        }

        /** 4xx/5xx with the bridge's {"error", "message", "errors"} body. */
        public static function httpError(array $response): string
        {
            $json = $response['json'];
            if (!is_array($json)) {
                return self::nonJson($response);
            }
            $http = $response['http'];
            $error = (string) ($json['error'] ?? ($json['status'] ?? 'error'));
            $text = 'Mail bridge refused the request (HTTP ' . $http . ' ' . $error . ')';
            if (!empty($json['message'])) {
                $text .= ': ' . $json['message'];
            }
            if (!empty($json['errors']) && is_array($json['errors'])) {
                $text .= ' [' . implode('; ', self::flattenErrors($json['errors'], '')) . ']';
            }
            if ($http === 401) {
                $text .= '. Check that the server entry\'s Password holds the bridge\'s whsec_ '
                    . 'secret and that the WHMCS server\'s clock is right';
            }
            return $text;
        }

        private static function flattenErrors(array $errors, string $prefix): array
        {
            $out = [];
            foreach ($errors as $field => $value) {
                $path = is_int($field) ? $prefix : ($prefix === '' ? (string) $field : $prefix . '.' . $field);
                if (is_array($value)) {
                    $out = array_merge($out, self::flattenErrors($value, $path));
                } else {
                    $out[] = ($path !== '' ? $path . ': ' : '') . $value;
                }
            }
            return $out;
        }
    }
}

<?php
/**
 * The Blesta module's transport to the mail bridge: Standard Webhooks v1 signatures
 * (webhook-id, webhook-timestamp, webhook-signature "v1,<base64 HMAC-SHA256>"), signed POSTs of
 * lifecycle events and signed GETs of the connector endpoints (tiers, usage, service). Needs
 * only PHP's curl and json extensions. Nothing here calls Blesta.
 */

if (!class_exists('MailBridgeApi')) {

    final class MailBridgeApi
    {
        const VERSION = '2.0.0';
        const CONNECT_TIMEOUT_S = 5;
        /** The bridge answers events within its inline timeout (20 s by default). */
        const TIMEOUT_S = 25;
        /** Reads for pages and tabs: a page should not hang on them. */
        const READ_TIMEOUT_S = 15;
        /** The mail server's password policy. */
        const PASSWORD_MIN_LENGTH = 12;
        const GENERATED_PASSWORD_LENGTH = 16;
        /** Letters and digits that cannot be mistaken for one another (no I, O, l, o, 0, 1). */
        const PASSWORD_UPPER = 'ABCDEFGHJKLMNPQRSTUVWXYZ';
        const PASSWORD_LOWER = 'abcdefghijkmnpqrstuvwxyz';
        const PASSWORD_DIGITS = '23456789';
        /** Keys whose values stay JSON objects when empty. */
        const OBJECT_KEYS = ['vars', 'meta', 'configoptions', 'client'];

        /** @var string */
        private $baseUrl;
        /** @var string */
        private $source;
        /** @var string */
        private $secret;
        /** @var string */
        private $key;

        /**
         * @throws InvalidArgumentException with a sentence naming the field to fix
         */
        public function __construct(string $baseUrl, string $source, string $secret)
        {
            $problem = self::checkRow($baseUrl, $source, $secret);
            if ($problem !== null) {
                throw new InvalidArgumentException($problem);
            }
            $this->baseUrl = rtrim(trim($baseUrl), '/');
            $this->source = trim($source);
            $this->secret = trim($secret);
            $this->key = (string) base64_decode(substr($this->secret, 6), true);
        }

        /** Why a module row's values cannot reach a bridge, or null when they can. */
        public static function checkRow(string $baseUrl, string $source, string $secret): ?string
        {
            $parts = parse_url(trim($baseUrl));
            $scheme = strtolower((string) ($parts['scheme'] ?? ''));
            $host = strtolower((string) ($parts['host'] ?? ''));
            if (!in_array($scheme, ['https', 'http'], true) || $host === '' || isset($parts['query'])) {
                return 'bridge_url must be the bridge\'s address, e.g. https://bridge.example.org';
            }
            if ($scheme === 'http' && !in_array($host, ['127.0.0.1', 'localhost', '[::1]', '::1'], true)) {
                return 'bridge_url must use https (plain http only for 127.0.0.1 or localhost)';
            }
            if (!preg_match('/^[a-z0-9][a-z0-9_-]*$/', trim($source))) {
                return 'source must be the bridge\'s source name for this Blesta (e.g. blesta)';
            }
            $secret = trim($secret);
            $key = strpos($secret, 'whsec_') === 0 ? base64_decode(substr($secret, 6), true) : false;
            if ($key === false || strlen($key) < 24) {
                return 'secret must be the whsec_ secret from the bridge config (sources.<source>.secrets)';
            }
            return null;
        }

        public function source(): string
        {
            return $this->source;
        }

        public function baseUrl(): string
        {
            return $this->baseUrl;
        }

        /** What a log must never show. */
        public function secrets(): array
        {
            return [$this->secret, substr($this->secret, 6)];
        }

        public function digest(string $text): string
        {
            return hash_hmac('sha256', $text, $this->key);
        }

        public static function newWebhookId(): string
        {
            return 'msg_' . bin2hex(random_bytes(16));
        }

        public static function nowIso(): string
        {
            return (new DateTime('now', new DateTimeZone('UTC')))->format('Y-m-d\TH:i:s.uP');
        }

        public function signature(string $webhookId, int $timestamp, string $body): string
        {
            return 'v1,' . base64_encode(hash_hmac('sha256', $webhookId . '.' . $timestamp . '.' . $body, $this->key, true));
        }

        /** Every curl option of one request (kept apart so TLS settings can be checked). */
        public function curlOptions(string $method, string $path, string $body, string $webhookId, int $timestamp, int $timeout): array
        {
            $options = [
                CURLOPT_URL => $this->baseUrl . $path,
                CURLOPT_HTTPHEADER => [
                    'Content-Type: application/json',
                    'Accept: application/json',
                    'Expect:',
                    'webhook-id: ' . $webhookId,
                    'webhook-timestamp: ' . $timestamp,
                    'webhook-signature: ' . $this->signature($webhookId, $timestamp, $body),
                ],
                CURLOPT_RETURNTRANSFER => true,
                CURLOPT_FOLLOWLOCATION => false,
                CURLOPT_SSL_VERIFYPEER => true,
                CURLOPT_SSL_VERIFYHOST => 2,
                CURLOPT_CONNECTTIMEOUT => self::CONNECT_TIMEOUT_S,
                CURLOPT_TIMEOUT => $timeout,
                CURLOPT_USERAGENT => 'mailbridge-blesta/' . self::VERSION,
            ];
            if ($method === 'GET') {
                $options[CURLOPT_HTTPGET] = true;
            } else {
                $options[CURLOPT_POST] = true;
                $options[CURLOPT_POSTFIELDS] = $body;
            }
            if (defined('CURLOPT_PROTOCOLS') && defined('CURLPROTO_HTTPS')) {
                $options[CURLOPT_PROTOCOLS] = CURLPROTO_HTTPS | CURLPROTO_HTTP;
            }
            return $options;
        }

        /** One signed request: url, http (0 when nothing came back), raw, json, error. */
        public function request(string $method, string $path, string $body, string $webhookId, int $timeout): array
        {
            $options = $this->curlOptions($method, $path, $body, $webhookId, time(), $timeout);
            $ch = curl_init();
            curl_setopt_array($ch, $options);
            $raw = curl_exec($ch);
            $errno = curl_errno($ch);
            $error = $errno ? curl_error($ch) . ' (curl error ' . $errno . ')' : '';
            $http = $errno ? 0 : (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
            curl_close($ch);
            $raw = is_string($raw) ? $raw : '';
            $json = json_decode($raw, true);
            return [
                'url' => $options[CURLOPT_URL], 'http' => $http, 'raw' => $raw,
                'json' => is_array($json) ? $json : null, 'error' => $error, 'errno' => $errno,
            ];
        }

        /** Post one lifecycle event to /hooks/<source>. */
        public function postEvent(string $body, string $webhookId, int $timeout = self::TIMEOUT_S): array
        {
            return $this->request('POST', '/hooks/' . $this->source, $body, $webhookId, $timeout);
        }

        /** The connector self-test (the bridge checks it can use the mail server). */
        public function status(): array
        {
            return $this->request('POST', '/hooks/' . $this->source . '/status', '{}', self::newWebhookId(), self::READ_TIMEOUT_S);
        }

        /** A signed GET of a connector endpoint (signed over the empty body). */
        public function get(string $path, array $query = []): array
        {
            $suffix = $query ? '?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986) : '';
            return $this->request('GET', '/hooks/' . $this->source . $path . $suffix, '', self::newWebhookId(), self::READ_TIMEOUT_S);
        }

        /**
         * The bridge's tiers as key => {key, label, bundle}.
         *
         * @throws RuntimeException with a sentence staff can act on
         */
        public function tiers(): array
        {
            $response = $this->get('/tiers');
            $json = $response['json'];
            if ($response['http'] !== 200 || !is_array($json) || !is_array($json['tiers'] ?? null)) {
                throw new RuntimeException('the tiers could not be read: ' . self::readError($response));
            }
            $tiers = [];
            foreach ($json['tiers'] as $tier) {
                if (is_array($tier) && isset($tier['key']) && is_scalar($tier['key']) && (string) $tier['key'] !== '') {
                    $tiers[(string) $tier['key']] = $tier;
                }
            }
            return $tiers;
        }

        /**
         * One service's usage row from the usage endpoint (matched by service id), or null
         * when the bridge lists none for it.
         *
         * @throws RuntimeException
         */
        public function usageOf(int $serviceId): ?array
        {
            // The endpoint pages by service id compared as text ("after" is exclusive). "214~"
            // sorts after every id below "215" and after none of the ids from "215" on, so the
            // service, if listed, is on this short page.
            $id = (string) max(1, $serviceId);
            $after = substr($id, 0, -1) . chr(ord(substr($id, -1)) - 1) . '~';
            $response = $this->get('/usage', ['after' => $after, 'limit' => 5]);
            $json = $response['json'];
            if ($response['http'] !== 200 || !is_array($json) || !is_array($json['services'] ?? null)) {
                throw new RuntimeException('the usage could not be read: ' . self::readError($response));
            }
            foreach ($json['services'] as $row) {
                if (is_array($row) && (string) ($row['service_id'] ?? '') === (string) $serviceId) {
                    return $row;
                }
            }
            return null;
        }

        /**
         * The bridge's view of one service (state, bundle, last event, set-up records): the
         * decoded answer, null when the bridge has no such service yet.
         *
         * @throws RuntimeException
         */
        public function service(int $serviceId): ?array
        {
            $response = $this->request(
                'POST',
                '/hooks/' . $this->source . '/service',
                self::canonicalJson(['service' => $serviceId]),
                self::newWebhookId(),
                self::READ_TIMEOUT_S
            );
            if ($response['http'] === 200 && is_array($response['json'])) {
                return $response['json'];
            }
            if ($response['http'] === 404 && ($response['json']['error'] ?? '') === 'unknown_service') {
                return null;
            }
            throw new RuntimeException(self::readError($response));
        }

        /**
         * The answer to a lifecycle event as [ok, sentence]: ok only for HTTP 200 "applied".
         */
        public static function outcome(array $response): array
        {
            $json = $response['json'];
            $http = $response['http'];
            if ($http === 0) {
                return [false, self::transportError($response)];
            }
            if (!is_array($json)) {
                return [false, 'the bridge answered HTTP ' . $http . ' without JSON (a proxy in front of it?)'];
            }
            $status = (string) ($json['status'] ?? '');
            $reason = (string) ($json['reason'] ?? '');
            $message = (string) ($json['message'] ?? '');
            $ref = isset($json['event_id']) ? ' (bridge event ' . $json['event_id'] . ')' : '';
            if ($http === 200 && $status === 'applied') {
                return [true, 'applied' . $ref];
            }
            if ($http === 202 || $status === 'queued') {
                return [false, 'queued on the bridge (' . ($reason !== '' ? $reason : 'busy')
                    . (isset($json['next_attempt_at']) ? ', next attempt ' . $json['next_attempt_at'] : '')
                    . '): it will apply shortly; run the action again to see it done' . $ref];
            }
            if ($http === 200 && $status === 'failed') {
                return [false, ($reason !== '' ? $reason : 'failed') . ': ' . ($message !== '' ? $message : 'no message') . $ref];
            }
            if ($http === 200 && $status === 'superseded') {
                return [false, 'superseded: a newer event for this service was already applied' . $ref];
            }
            if ($http === 200 && $status === 'ignored') {
                return [false, 'ignored by the bridge: ' . ($message !== '' ? $message : 'nothing to do') . $ref];
            }
            return [false, self::httpError($response)];
        }

        /** Worth trying again later: nothing came back, rate limited or a server-side error. */
        public static function transient(array $response): bool
        {
            return $response['http'] === 0 || $response['http'] === 429 || $response['http'] >= 500;
        }

        public static function transportError(array $response): string
        {
            $hint = '';
            if (in_array((int) $response['errno'], [35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91], true)) {
                $hint = ' (the bridge\'s TLS certificate could not be verified)';
            } elseif ((int) $response['errno'] === 28) {
                $hint = ' (no answer in time; the bridge may still apply it: run the action again)';
            }
            return 'the bridge is unreachable at ' . strtok($response['url'], '?') . ': ' . $response['error'] . $hint;
        }

        /** 4xx/5xx with the bridge's {"error", "message", "errors"} body. */
        public static function httpError(array $response): string
        {
            $json = $response['json'];
            if (!is_array($json)) {
                return 'the bridge answered HTTP ' . $response['http'] . ' without JSON (a proxy in front of it?)';
            }
            $text = 'the bridge refused the request (HTTP ' . $response['http'] . ' '
                . (string) ($json['error'] ?? ($json['status'] ?? 'error')) . ')';
            if (!empty($json['message'])) {
                $text .= ': ' . $json['message'];
            }
            if (!empty($json['errors']) && is_array($json['errors'])) {
                $text .= ' [' . implode('; ', self::flatten($json['errors'], '')) . ']';
            }
            if ($response['http'] === 401) {
                $text .= '. Check the module row\'s secret and this server\'s clock';
            }
            return $text;
        }

        /** Why a read did not give what was asked. */
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

        private static function flatten(array $errors, string $prefix): array
        {
            $out = [];
            foreach ($errors as $field => $value) {
                $path = is_int($field) ? $prefix : ($prefix === '' ? (string) $field : $prefix . '.' . $field);
                if (is_array($value)) {
                    $out = array_merge($out, self::flatten($value, $path));
                } else {
                    $out[] = ($path !== '' ? $path . ': ' : '') . $value;
                }
            }
            return $out;
        }

        /** At least 12 characters with an upper-case letter, a lower-case letter and a digit. */
        public static function passwordMeetsPolicy($password): bool
        {
            if (!is_string($password) || $password === '' || preg_match('//u', $password) !== 1) {
                return false;
            }
            return preg_match_all('/./us', $password) >= self::PASSWORD_MIN_LENGTH
                && preg_match('/\p{Lu}/u', $password) === 1
                && preg_match('/\p{Ll}/u', $password) === 1
                && preg_match('/\p{Nd}/u', $password) === 1;
        }

        /** 16 characters from random_int(), at least one of each class, in random places. */
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
            for ($i = count($chars) - 1; $i > 0; $i--) {
                $j = random_int(0, $i);
                [$chars[$i], $chars[$j]] = [$chars[$j], $chars[$i]];
            }
            return implode('', $chars);
        }

        /** Sorted keys, the same bytes for the same data: a retry can repeat a body exactly. */
        public static function canonicalJson($value): string
        {
            $json = json_encode(
                self::canonical($value, ''),
                JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE
            );
            if ($json === false) {
                throw new RuntimeException('the request could not be encoded as JSON: ' . json_last_error_msg());
            }
            return $json;
        }

        private static function canonical($value, string $key)
        {
            if (is_object($value)) {
                $value = (array) $value;
            }
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
    }
}

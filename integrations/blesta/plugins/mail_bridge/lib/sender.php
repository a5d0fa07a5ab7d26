<?php
/**
 * Signs a body with Standard Webhooks v1 and posts it to the mail bridge (curl + json only).
 */

if (!class_exists('MailBridgeSender')) {

    final class MailBridgeSender
    {
        const VERSION = '1.0.0';
        const CONNECT_TIMEOUT_S = 5;
        const TIMEOUT_S = 25;

        /** @var string */
        private $url;
        /** @var string */
        private $key;

        /**
         * @throws InvalidArgumentException on a URL or secret the bridge cannot accept
         */
        public function __construct(string $url, string $secret)
        {
            $parts = parse_url($url);
            $scheme = strtolower((string) ($parts['scheme'] ?? ''));
            $host = strtolower((string) ($parts['host'] ?? ''));
            if (!in_array($scheme, ['https', 'http'], true) || $host === '') {
                throw new InvalidArgumentException('url must be https://<bridge host>/hooks/<source>');
            }
            if ($scheme === 'http' && !in_array($host, ['127.0.0.1', 'localhost', '[::1]', '::1'], true)) {
                throw new InvalidArgumentException('url must use https (plain http only for 127.0.0.1 or localhost)');
            }
            $key = strpos($secret, 'whsec_') === 0 ? base64_decode(substr($secret, 6), true) : false;
            if ($key === false || strlen($key) < 24) {
                throw new InvalidArgumentException('secret must be the whsec_ secret from the bridge config');
            }
            $this->url = rtrim($url, '/');
            $this->key = $key;
        }

        public static function newWebhookId(): string
        {
            return 'msg_' . bin2hex(random_bytes(16));
        }

        public function signature(string $webhookId, int $timestamp, string $body): string
        {
            return 'v1,' . base64_encode(hash_hmac('sha256', $webhookId . '.' . $timestamp . '.' . $body, $this->key, true));
        }

        public function curlOptions(string $body, string $webhookId, int $timestamp): array
        {
            $options = [
                CURLOPT_URL => $this->url,
                CURLOPT_POST => true,
                CURLOPT_POSTFIELDS => $body,
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
                CURLOPT_TIMEOUT => self::TIMEOUT_S,
                CURLOPT_USERAGENT => 'mailbridge-blesta/' . self::VERSION,
            ];
            if (defined('CURLOPT_PROTOCOLS') && defined('CURLPROTO_HTTPS')) {
                $options[CURLOPT_PROTOCOLS] = CURLPROTO_HTTPS | CURLPROTO_HTTP;
            }
            return $options;
        }

        /** Returns http (0 when nothing came back), raw, json, error. */
        public function post(string $body, string $webhookId): array
        {
            $ch = curl_init();
            curl_setopt_array($ch, $this->curlOptions($body, $webhookId, time()));
            $raw = curl_exec($ch);
            $errno = curl_errno($ch);
            $error = $errno ? curl_error($ch) . ' (curl error ' . $errno . ')' : '';
            $http = $errno ? 0 : (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
            curl_close($ch);
            $raw = is_string($raw) ? $raw : '';
            $json = json_decode($raw, true);
            return ['http' => $http, 'raw' => $raw, 'json' => is_array($json) ? $json : null, 'error' => $error];
        }

        /** Worth sending again later: nothing came back, rate limited, or a server-side error. */
        public static function transient(array $response): bool
        {
            return $response['http'] === 0 || $response['http'] === 429 || $response['http'] >= 500;
        }

        /** One line for the log: the bridge's status or error, reason and message. */
        public static function describe(array $response): string
        {
            if ($response['http'] === 0) {
                return 'unreachable: ' . $response['error'];
            }
            $json = $response['json'];
            if (!is_array($json)) {
                return 'HTTP ' . $response['http'] . ' without JSON';
            }
            $parts = ['HTTP ' . $response['http'], (string) ($json['status'] ?? ($json['error'] ?? ''))];
            foreach (['reason', 'message'] as $key) {
                if (!empty($json[$key])) {
                    $parts[] = (string) $json[$key];
                }
            }
            if (isset($json['event_id'])) {
                $parts[] = 'bridge event ' . $json['event_id'];
            }
            return implode(': ', array_filter($parts, 'strlen'));
        }
    }
}

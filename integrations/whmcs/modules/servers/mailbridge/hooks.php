<?php
/**
 * mailbridge: report services that moved to another client (WHMCS has no module call for it).
 *
 * The module's own hook file: WHMCS finds hooks.php in a provisioning module's directory and
 * loads it on every page (it looks for it when the module is activated; if this file arrives
 * later, open a mailbridge product's Module Settings and press Save Changes once).
 *
 * WHMCS's "Move Product/Service" and client merges change a service's owner without calling
 * the server module. The module records, on each successful command, the client it reported
 * (service property `mailbridge_owner`). These hooks compare that with the service's client
 * and, when they differ, run the module's "MoveService" custom function through the
 * documented ModuleCustom API; the module then sends MoveService (with previous_userid) to
 * the bridge, which moves the DomainAdmin's recovery e-mail to the new client.
 *
 * Only documented hooks and localAPI commands are used: AdminServiceEdit, ServiceEdit and
 * AfterClientMerge; GetClientsProducts and ModuleCustom. A failure is written to the
 * activity log and never breaks the WHMCS page; the admin button "Report client change"
 * on the service sends the same thing by hand.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

if (!function_exists('mailbridge_hook_owner')) {

    /** The client the bridge last heard of, from the service's custom fields ('' if none). */
    function mailbridge_hook_owner(array $product): string
    {
        $fields = $product['customfields']['customfield'] ?? [];
        foreach (is_array($fields) ? $fields : [] as $field) {
            if (is_array($field) && trim(explode('|', (string) ($field['name'] ?? ''), 2)[0]) === 'mailbridge_owner') {
                return trim((string) ($field['value'] ?? ''));
            }
        }
        return '';
    }

    function mailbridge_hook_log(string $message): void
    {
        if (function_exists('logActivity')) {
            logActivity('Mail bridge: ' . $message);
        }
    }

    /** Run the module's MoveService for one service whose owner changed. */
    function mailbridge_hook_report(int $serviceId, string $previous, string $current): void
    {
        $result = localAPI('ModuleCustom', ['serviceid' => $serviceId, 'func_name' => 'MoveService']);
        if (($result['result'] ?? '') === 'success') {
            mailbridge_hook_log("service #$serviceId moved from client #$previous to #$current: reported");
            return;
        }
        $why = (string) ($result['message'] ?? 'no answer');
        mailbridge_hook_log(
            "service #$serviceId moved from client #$previous to #$current, not reported yet: $why. "
            . 'Press "Report client change" on the service to send it again.'
        );
    }

    /** Services matching a GetClientsProducts query, all pages. */
    function mailbridge_hook_products(array $query): array
    {
        $out = [];
        $start = 0;
        do {
            $result = localAPI('GetClientsProducts', $query + ['limitstart' => $start, 'limitnum' => 100]);
            if (($result['result'] ?? '') !== 'success') {
                mailbridge_hook_log('GetClientsProducts failed: ' . ($result['message'] ?? 'no answer'));
                break;
            }
            $page = $result['products']['product'] ?? [];
            $page = is_array($page) ? $page : [];
            $out = array_merge($out, $page);
            $start += count($page);
            $total = (int) ($result['totalresults'] ?? 0);
        } while ($page && $start < $total);
        return $out;
    }

    /** After a service save: report it if its client is not the one the bridge knows. */
    function mailbridge_hook_service_edited(array $vars): void
    {
        $serviceId = (int) ($vars['serviceid'] ?? 0);
        if ($serviceId < 1 || !function_exists('localAPI')) {
            return;
        }
        try {
            foreach (mailbridge_hook_products(['serviceid' => $serviceId]) as $product) {
                $owner = mailbridge_hook_owner($product);
                $client = (string) ($product['clientid'] ?? '');
                if ($owner !== '' && $client !== '' && (int) $owner !== (int) $client) {
                    mailbridge_hook_report((int) $product['id'], $owner, $client);
                }
            }
        } catch (Throwable $e) {
            mailbridge_hook_log("checking service #$serviceId for a client change failed: " . $e->getMessage());
        }
    }

    /** After two clients were merged: the services of fromUserID now belong to toUserID;
     * every one whose recorded client is not toUserID is reported. */
    function mailbridge_hook_clients_merged(array $vars): void
    {
        $to = (int) ($vars['toUserID'] ?? 0);
        $from = (int) ($vars['fromUserID'] ?? 0);
        if ($to < 1 || !function_exists('localAPI')) {
            return;
        }
        try {
            foreach (mailbridge_hook_products(['clientid' => $to]) as $product) {
                $owner = mailbridge_hook_owner($product);
                if ($owner !== '' && (int) $owner !== $to) {
                    mailbridge_hook_report((int) $product['id'], $owner, (string) $to);
                }
            }
        } catch (Throwable $e) {
            mailbridge_hook_log("reporting the merge of client #$from into #$to failed: " . $e->getMessage());
        }
    }
}

if (function_exists('add_hook')) {
    add_hook('AdminServiceEdit', 1, 'mailbridge_hook_service_edited');
    add_hook('ServiceEdit', 1, 'mailbridge_hook_service_edited');
    add_hook('AfterClientMerge', 1, 'mailbridge_hook_clients_merged');
}

{* mailbridge client area. Variables (raw values, escape them when you customise this file):
   {$mailbridge.state} {$mailbridge.username} {$mailbridge.domain} {$mailbridge.mail_hostname}
   {$mailbridge.webmail_url} {$mailbridge.admin_url} {$mailbridge.spf}
   {$mailbridge.mx} (list of host/priority) {$mailbridge.backup_mx} (list of host names)
   {$mailbridge_panel} is the same information as ready, already escaped HTML. *}
<h3>Mail account</h3>
{if $mailbridge_notice}
    <div class="alert alert-info">{$mailbridge_notice|escape:'html'}</div>
{else}
    {$mailbridge_panel}
{/if}
